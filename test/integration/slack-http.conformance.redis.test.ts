// The shared platform-adapter suite against Slack in HTTP mode: every command, event and button press is a signed
// request to Bolt's HTTPReceiver (see slack.conformance.redis.test.ts for Socket Mode).
import { platformAdapterCases } from '../conformance/platform-adapter.case.ts';
import { SlackDriver } from '../conformance/slack.driver.ts';

platformAdapterCases(() => new SlackDriver('http'));
