// The shared platform-adapter suite (test/conformance/platform-adapter.case.ts) run against Slack: real
// @slack/bolt ↔ fake Slack, real Redis, real worker process with the test double pipeline. Socket Mode here;
// HTTP mode in slack-http.conformance.redis.test.ts (a separate file so the two run in parallel).
import { platformAdapterCases } from '../conformance/platform-adapter.case.ts';
import { SlackDriver } from '../conformance/slack.driver.ts';

platformAdapterCases(() => new SlackDriver('socket'));
