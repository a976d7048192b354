"""Turns bench/load.sh's raw `key value` lines into a Markdown report:
median and range over the runs, beside each issue-6 target."""

import statistics
import sys
from collections import defaultdict

path, runs, duration = sys.argv[1], sys.argv[2], sys.argv[3]
values = defaultdict(list)
for line in open(path):
    key, value = line.split()
    values[key].append(float(value))

ROWS = [
    ("a_ratio", "(a) 0 subscribers, saturation: hooked / plain req/s (plain, hooked, hooked, plain)", ">= 0.97", lambda v: v >= 0.97),
    ("a_plain_rps", "(a) plain endpoint req/s", "", None),
    ("fixed5k_default_p99_ratio", "5,000 req/s, 1 subscriber, default runtime: p99 / p99 with 0 subscribers", "<= 1.25", lambda v: v <= 1.25),
    ("fixed5k_nice10_p99_ratio", "5,000 req/s, 1 subscriber, `.nice(10)`: p99 / p99 with 0 subscribers", "<= 1.25", lambda v: v <= 1.25),
    ("fixed5k_shared_p99_ratio", "5,000 req/s, 1 subscriber, `DeliveryRuntime::shared()`: p99 / p99 with 0 subscribers", "<= 1.25", lambda v: v <= 1.25),
    ("fixed5k_0sub_p99_ms", "5,000 req/s: p99, 0 subscribers (ms)", "", None),
    ("fixed5k_default_p99_ms", "5,000 req/s: p99, 1 subscriber, default runtime (ms)", "", None),
    ("fixed5k_nice10_p99_ms", "5,000 req/s: p99, 1 subscriber, `.nice(10)` (ms)", "", None),
    ("fixed5k_shared_p99_ms", "5,000 req/s: p99, 1 subscriber, shared runtime (ms)", "", None),
    ("fixed5k_0sub_app_cpu_us", "5,000 req/s: app CPU per request, 0 subscribers (µs)", "", None),
    ("fixed5k_default_app_cpu_us", "5,000 req/s: app CPU per request, 1 subscriber, default runtime (µs, delivery included)", "", None),
    ("fixed5k_nice10_app_cpu_us", "5,000 req/s: app CPU per request, 1 subscriber, `.nice(10)` (µs, delivery included)", "", None),
    ("fixed5k_shared_app_cpu_us", "5,000 req/s: app CPU per request, 1 subscriber, shared runtime (µs, delivery included)", "", None),
    ("fixed5k_default_rx_cpu_us", "5,000 req/s: receiver CPU per delivery, default runtime (µs)", "", None),
    ("fixed5k_default_backlog_s", "5,000 req/s, default runtime: backlog when the load stops (s of load; worst slice)", "< 1", lambda v: v < 1),
    ("fixed5k_nice10_backlog_s", "5,000 req/s, `.nice(10)`: backlog when the load stops (s of load; worst slice)", "< 1", lambda v: v < 1),
    ("fixed5k_shared_backlog_s", "5,000 req/s, shared runtime: backlog when the load stops (s of load; worst slice)", "< 1", lambda v: v < 1),
    ("fixed5k_default_lag_ms", "5,000 req/s, default runtime: lag until all delivered (ms; worst slice)", "", None),
    ("b1_rps_vs_plain", "(b) 1 subscriber, saturation: req/s / plain", "", None),
    ("b1_events_per_s", "(b) 1 subscriber: events fully delivered per s", ">= 12,200 (50x 244)", lambda v: v >= 12200),
    ("b1_backlog_at_stop", "(b) 1 subscriber: backlog at stop (deliveries)", "", None),
    ("b1_lag_ms", "(b) 1 subscriber: lag until all delivered (ms)", "", None),
    ("b1_refused_at_intake", "(b) 1 subscriber: events refused at intake (queue full, reported)", "", None),
    ("b1_reported", "(b) 1 subscriber: deliveries reported to on_failure (backlog full)", "", None),
    ("b1_lost", "(b) 1 subscriber: lost (accepted, neither delivered nor reported)", "0", lambda v: v == 0),
    ("b1_bad_signatures", "(b) 1 subscriber: bad signatures", "0", lambda v: v == 0),
    ("b10_rps_vs_plain", "(b) 10 subscribers, saturation: req/s / plain", "", None),
    ("b10_events_per_s", "(b) 10 subscribers: events fully delivered per s", ">= 17,500 (50x 350)", lambda v: v >= 17500),
    ("b10_deliveries_per_s", "(b) 10 subscribers: deliveries per s", "", None),
    ("b10_backlog_at_stop", "(b) 10 subscribers: backlog at stop (deliveries)", "", None),
    ("b10_lag_ms", "(b) 10 subscribers: lag until all delivered (ms)", "", None),
    ("b10_refused_at_intake", "(b) 10 subscribers: events refused at intake (queue full, reported)", "", None),
    ("b10_reported", "(b) 10 subscribers: deliveries reported to on_failure (backlog full)", "", None),
    ("b10_lost", "(b) 10 subscribers: lost (accepted, neither delivered nor reported)", "0", lambda v: v == 0),
    ("b10_bad_signatures", "(b) 10 subscribers: bad signatures", "0", lambda v: v == 0),
    ("b10_cores_app_requests", "(b) 10 subscribers: cores used by the app's request threads", "", None),
    ("b10_cores_app_delivery", "(b) 10 subscribers: cores used by the app's delivery threads", "", None),
    ("b10_cores_receiver", "(b) 10 subscribers: cores used by the receiver", "", None),
    ("b10_delivery_cpu_us", "(b) 10 subscribers: delivery threads' CPU per delivery (µs)", "", None),
    ("b10_rx_cpu_us", "(b) 10 subscribers: receiver CPU per delivery (µs)", "", None),
    ("c_burst_ms", "(c) 20,000-request burst: until all delivered (ms)", "< 2,000", lambda v: v < 2000),
    ("c_burst_delivered", "(c) burst: delivered", "20,000", lambda v: v == 20000),
    ("c_peak_rss_mb", "(c) burst: peak RSS (MB)", "< 64", lambda v: v < 64),
    ("d_receiver_rps", "(d) receiver capacity, signed bodies (req/s)", "", None),
    ("d_cores_receiver", "(d) cores used by the receiver at capacity", "", None),
    ("d_rx_cpu_us", "(d) receiver CPU per request at capacity (µs)", "", None),
    ("d_10sub_share", "(d) 10-subscriber deliveries/s / receiver capacity", ">= 0.5", lambda v: v >= 0.5),
    ("e_delivered", "(e) 30 % 503s, 5,000 events: delivered", "", None),
    ("e_reported", "(e) 30 % 503s: dead-lettered (all 4 attempts failed)", "", None),
    ("e_lost", "(e) 30 % 503s: lost", "0", lambda v: v == 0),
    ("m_dead_rss_mb", "dead subscriber, 100,000 events: RSS (MB)", "bounded", None),
    ("m_dead_reported", "dead subscriber: reported to on_failure", "", None),
]


def fmt(v):
    return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"


print(f"Runs: {runs}, load duration {duration} s. Median [min .. max].\n")
print("| measurement | median [range] | target | met |")
print("|---|---|---|---|")
for key, label, target, ok in ROWS:
    if key not in values:
        continue
    v = values[key]
    med = statistics.median(v)
    rng = f" [{fmt(min(v))} .. {fmt(max(v))}]" if len(v) > 1 else ""
    met = "" if ok is None else ("yes" if ok(med) else "**no**")
    print(f"| {label} | {fmt(med)}{rng} | {target} | {met} |")
