// The real @sentry/node, in a Node process of its own: `node send.mjs DSN SCENARIO [COUNT]`.
// Prints one line per event the SDK sends (its id), then "flushed" - or, for `uncaught`,
// lets an error escape, which the SDK reports before Node exits with 1.
// Scenarios: `crash` (COUNT exceptions from checkout(), then a message), `uncaught`,
// `quota` (COUNT exceptions, each flushed before the next, so a 429 is seen in between),
// `big` (an exception with 48 KB of extra data: over 32 KB the SDK sends it gzipped).
import * as Sentry from "@sentry/node";

const [dsn, scenario, count = "1"] = process.argv.slice(2);

Sentry.init({
  dsn,
  release: "shop@2.0.1",
  environment: "staging",
  // Nothing but errors: no traces, no sessions, no client reports in between.
  tracesSampleRate: 0,
  sendClientReports: false,
  // A stack with messages too, as many apps ask: the SDK sends it as a made-up exception.
  attachStacktrace: true,
  autoSessionTracking: false,
  beforeSend(event) {
    console.log(event.event_id);
    return event;
  },
});

function checkout(order) {
  // Two lines, so grouping that counted line numbers would make two issues.
  if (order % 2) {
    throw new TypeError(`order ${order} could not be paid`);
  }
  throw new TypeError(`order ${order} could not be paid`);
}

function payAll(orders) {
  for (let order = 1; order <= orders; order++) {
    try {
      checkout(order);
    } catch (error) {
      Sentry.captureException(error);
    }
  }
}

async function quota(orders) {
  for (let order = 1; order <= orders; order++) {
    try {
      checkout(order);
    } catch (error) {
      Sentry.captureException(error);
    }
    await Sentry.flush(5000);
  }
}

if (scenario === "crash") {
  payAll(Number(count));
  Sentry.captureMessage("the nightly export found 3 orders without an invoice");
} else if (scenario === "quota") {
  await quota(Number(count));
} else if (scenario === "big") {
  Sentry.withScope((scope) => {
    scope.setExtra("basket", "a line of the basket\n".repeat(2400));
    payAll(1);
  });
} else if (scenario === "uncaught") {
  setTimeout(() => checkout(7), 0);
} else {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
if (scenario !== "uncaught") {
  await Sentry.flush(10000);
  console.log("flushed");
}
