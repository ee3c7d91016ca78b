// The shared platform-adapter suite (test/conformance/platform-adapter.case.ts) run against Slack: real
// @slack/bolt in Socket Mode ↔ fake Slack, real Redis, real worker process with the test double pipeline.
import { platformAdapterCases } from '../conformance/platform-adapter.case.ts';
import { SlackDriver } from '../conformance/slack.driver.ts';

platformAdapterCases(() => new SlackDriver());
