//! The checks every [`AttemptLog`] must pass: run them against your own
//! log from its tests. Feature `conformance`.
//!
//! ```
//! use fastapihooks_core::history::MemoryAttemptLog;
//! use fastapihooks_core::history::conformance;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let log = MemoryAttemptLog::default();
//! if let Err(failures) = conformance::run(&log).await {
//!     panic!("{failures}");
//! }
//! # }
//! ```
//!
//! **Run it on a log of its own, new**: the pruning checks
//! ([`Check::PruneByAgeDeletesExactlyTheOlder`],
//! [`Check::PruneByCountKeepsTheNewest`]) delete every record first, and
//! write records dated a year ahead (a log whose ids follow the start
//! times, like a Redis stream, must hold nothing later). The other checks
//! work on ids, names and owners of their own (`...<check>.<random>`) and
//! look only at what they wrote among what a query returns, so they hold on
//! a log that already has records. [`run_check`] runs one check, for a test
//! per check.
//!
//! Times are compared to the microsecond: logs may keep no finer.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use super::{AttemptLog, AttemptLogError, AttemptOutcome, AttemptQuery, AttemptRecord, MAX_PAGE, Retention};

macro_rules! checks {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// One behaviour every attempt log must have.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Check {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Check {
            /// Every check, in the order [`run`] runs them.
            pub const ALL: &'static [Check] = &[$(Check::$variant,)*];

            /// The check's name, in snake case (a test name).
            pub fn name(self) -> &'static str {
                match self {
                    $(Check::$variant => $name,)*
                }
            }
        }
    };
}

checks! {
    /// Records come back as written, each with a distinct, non-empty id,
    /// newest (last written) first, across two batches.
    RecordsComeBackNewestFirstWithIds => "records_come_back_newest_first_with_ids",
    /// Each filter (event, subscription, owner, since, until, outcome)
    /// alone and combined returns exactly the matching records, newest
    /// first; `since` includes its instant, `until` excludes its own.
    EachFilterAloneAndCombined => "each_filter_alone_and_combined",
    /// Following `next` page after page (limits 1, 4, 7 and more than
    /// there are, with and without a filter) visits every matching record
    /// exactly once, newest first, no page over its limit, and ends.
    PaginationVisitsEveryRecordOnce => "pagination_visits_every_record_once",
    /// A cursor the log did not make is refused with
    /// `AttemptLogError::InvalidQuery` (empty, words, SQL, an overflowing
    /// number, non-ASCII).
    InvalidCursorIsInvalidQuery => "invalid_cursor_is_invalid_query",
    /// An owner filter returns that owner's records only: owners that
    /// differ by case, a trailing space or a suffix are other owners.
    OwnerFilterNeverReturnsAnotherOwner => "owner_filter_never_returns_another_owner",
    /// Every field round-trips: a 4 KiB non-ASCII body, its `truncated`
    /// flag, header values, status, error text with quotes and new lines,
    /// large attempt and duration numbers, absent options; a body with a
    /// NUL byte is written (and read back as written, or with U+FFFD for
    /// the NUL).
    ResponseDetailsRoundTrip => "response_details_round_trip",
    /// Pruning by age, called again while it deletes a full batch (as the
    /// engine does), deletes exactly the records started before the cutoff,
    /// at most `batch_size` per call, and keeps the rest; with nothing too
    /// old, or `Retention::forever()`, it deletes nothing.
    PruneByAgeDeletesExactlyTheOlder => "prune_by_age_deletes_exactly_the_older",
    /// Pruning by count, called the same way, deletes the oldest records
    /// beyond the newest `max_count`, at most `batch_size` per call, and
    /// keeps exactly the newest `max_count`.
    PruneByCountKeepsTheNewest => "prune_by_count_keeps_the_newest",
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A check that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {message}")]
#[non_exhaustive]
pub struct CheckFailure {
    /// The check.
    pub check: Check,
    /// What was wrong.
    pub message: String,
}

/// Every check that failed in [`run`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ConformanceFailures {
    /// The failures, in check order.
    pub failures: Vec<CheckFailure>,
}

impl fmt::Display for ConformanceFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} attempt log conformance check(s) failed:", self.failures.len())?;
        for failure in &self.failures {
            write!(f, "\n  - {failure}")?;
        }
        Ok(())
    }
}

/// Runs every [`Check`] against `log`, one after the other. See the
/// [module docs](self): the log must be new.
///
/// # Errors
/// The checks that failed (the others still run).
pub async fn run<L: AttemptLog + ?Sized>(log: &L) -> Result<(), ConformanceFailures> {
    let mut failures = Vec::new();
    for &check in Check::ALL {
        if let Err(failure) = run_check(log, check).await {
            failures.push(failure);
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(ConformanceFailures { failures }) }
}

/// Runs one check against `log`.
///
/// # Errors
/// What the log did wrong (or a log error where none was expected).
pub async fn run_check<L: AttemptLog + ?Sized>(log: &L, check: Check) -> Result<(), CheckFailure> {
    let cx = Cx { log, check, tag: uuid::Uuid::now_v7().simple().to_string(), base: Utc::now().trunc_subsecs(0) };
    cx.run().await.map_err(|message| CheckFailure { check, message })
}

type Outcome = Result<(), String>;

/// Fails the check with a message unless `$cond`.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

struct Cx<'a, L: ?Sized> {
    log: &'a L,
    check: Check,
    tag: String,
    /// Now, to the second.
    base: DateTime<Utc>,
}

fn log_err(op: &str, e: AttemptLogError) -> String {
    format!("{op} failed: {e}")
}

fn minutes(n: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::minutes(n)
}

/// The record as written: what a log gives back, its id aside.
fn unnumbered(r: &AttemptRecord) -> AttemptRecord {
    AttemptRecord { id: String::new(), ..r.clone() }
}

impl<L: AttemptLog + ?Sized> Cx<'_, L> {
    /// A name of this check and run.
    fn name(&self, what: &str) -> String {
        format!("conformance.{}.{}.{what}", self.check.name(), self.tag)
    }

    /// The URL prefix that marks this run's records.
    fn url_prefix(&self) -> String {
        format!("https://conformance.example/{}/{}/", self.check.name(), self.tag)
    }

    /// Record `n` of this run (`n` is in its URL: what tells records apart).
    fn record(&self, n: usize, event: &str, started_at: DateTime<Utc>) -> AttemptRecord {
        let outcome = AttemptOutcome::ALL[n % AttemptOutcome::ALL.len()];
        let mut r =
            AttemptRecord::new(event, "order.created", format!("{}{n}", self.url_prefix()), started_at, outcome);
        r.attempt = u32::try_from(n % 5).unwrap_or(0) + 1;
        r.duration_ms = 10 + n as u64;
        r
    }

    /// The number of one of this run's records, from its URL.
    fn number(&self, r: &AttemptRecord) -> Option<usize> {
        r.target_url.strip_prefix(&self.url_prefix())?.parse().ok()
    }

    async fn write(&self, batch: &[AttemptRecord]) -> Outcome {
        self.log.record(batch).await.map_err(|e| log_err("record", e))
    }

    /// Every page of `query`, checked: no page over its limit, ids present
    /// and distinct, an end within a bound.
    async fn all(&self, query: AttemptQuery) -> Result<Vec<AttemptRecord>, String> {
        let mut query = query;
        let mut out = Vec::new();
        let mut ids = BTreeSet::new();
        for _ in 0..20_000 {
            let page = self.log.query(&query).await.map_err(|e| log_err("query", e))?;
            ensure!(
                page.records.len() <= query.page_size(),
                "a page of limit {} held {} records",
                query.page_size(),
                page.records.len()
            );
            for r in &page.records {
                ensure!(!r.id.is_empty(), "a record came back without an id");
                ensure!(ids.insert(r.id.clone()), "record id {} came back twice across pages", r.id);
                ensure!(query.matches(r), "a record that does not pass the filters came back: {r:?}");
            }
            out.extend(page.records);
            match page.next {
                None => return Ok(out),
                Some(next) => query.cursor = Some(next),
            }
        }
        Err("following `next` did not end after 20,000 pages".into())
    }

    /// This run's records among `query`'s, by number, in the order returned.
    async fn mine(&self, query: AttemptQuery) -> Result<Vec<usize>, String> {
        Ok(self.all(query).await?.iter().filter_map(|r| self.number(r)).collect())
    }

    /// Prunes like the engine: again while a call deletes a full batch.
    /// Every call's count is checked against the batch size.
    async fn prune_all(&self, retention: &Retention, now: DateTime<Utc>) -> Result<u64, String> {
        let mut total = 0;
        for _ in 0..100_000 {
            let n = self.log.prune(retention, now).await.map_err(|e| log_err("prune", e))?;
            ensure!(
                n <= retention.batch_size as u64,
                "prune deleted {n} in one call, over the batch of {}",
                retention.batch_size
            );
            total += n;
            if n < retention.batch_size as u64 {
                return Ok(total);
            }
        }
        Err("prune kept deleting full batches after 100,000 calls".into())
    }

    /// Deletes every record (a pruning check starts from an empty log).
    async fn empty(&self) -> Outcome {
        let everything = Retention::default().forever().max_count(0).batch_size(1000);
        self.prune_all(&everything, Utc::now()).await?;
        let left = self.log.query(&AttemptQuery::new().limit(1)).await.map_err(|e| log_err("query", e))?;
        ensure!(left.records.is_empty(), "pruning with max_count 0 left records: {:?}", left.records);
        Ok(())
    }

    async fn run(&self) -> Outcome {
        match self.check {
            Check::RecordsComeBackNewestFirstWithIds => self.newest_first().await,
            Check::EachFilterAloneAndCombined => self.filters().await,
            Check::PaginationVisitsEveryRecordOnce => self.pagination().await,
            Check::InvalidCursorIsInvalidQuery => self.invalid_cursor().await,
            Check::OwnerFilterNeverReturnsAnotherOwner => self.owner_isolation().await,
            Check::ResponseDetailsRoundTrip => self.round_trip().await,
            Check::PruneByAgeDeletesExactlyTheOlder => self.prune_by_age().await,
            Check::PruneByCountKeepsTheNewest => self.prune_by_count().await,
        }
    }

    async fn newest_first(&self) -> Outcome {
        let event = self.name("evt");
        let written: Vec<AttemptRecord> =
            (0..8).map(|n| self.record(n, &event, self.base - minutes(8 - n as i64))).collect();
        self.write(&written[..5]).await?;
        self.write(&written[5..]).await?;
        let got = self.all(AttemptQuery::new().event(&event).limit(MAX_PAGE)).await?;
        let order: Vec<Option<usize>> = got.iter().map(|r| self.number(r)).collect();
        let wanted: Vec<Option<usize>> = (0..8).rev().map(Some).collect();
        ensure!(order == wanted, "records came back in order {order:?}, wanted newest first {wanted:?}");
        for r in &got {
            let n = self.number(r).unwrap_or_default();
            ensure!(unnumbered(r) == written[n], "record {n} came back as {r:?}, written as {:?}", written[n]);
        }
        // The id is a cursor too: after record 5's id come 4, 3, 2, 1, 0.
        let after = self.mine(AttemptQuery::new().event(&event).after(got[2].id.clone()).limit(MAX_PAGE)).await?;
        ensure!(after == [4, 3, 2, 1, 0], "after record 5's id came {after:?}, wanted [4, 3, 2, 1, 0]");
        Ok(())
    }

    async fn filters(&self) -> Outcome {
        const N: usize = 24;
        let (e1, e2) = (self.name("evt1"), self.name("evt2"));
        let (s1, s2) = (self.name("sub1"), self.name("sub2"));
        let (o1, o2) = (self.name("owner1"), self.name("owner2"));
        let time = |n: usize| self.base - minutes((N - n) as i64);
        let written: Vec<AttemptRecord> = (0..N)
            .map(|n| {
                let mut r = self.record(n, if n % 2 == 0 { &e1 } else { &e2 }, time(n));
                r.subscription_id = [Some(s1.clone()), Some(s2.clone()), None][n % 3].clone();
                r.owner_id = [Some(o1.clone()), None, Some(o2.clone()), Some(o1.clone())][n % 4].clone();
                r
            })
            .collect();
        self.write(&written).await?;
        let cases = [
            AttemptQuery::new().event(&e1),
            AttemptQuery::new().subscription(&s1),
            AttemptQuery::new().owner(&o1),
            AttemptQuery::new().since(time(5)),
            AttemptQuery::new().until(time(15)),
            AttemptQuery::new().since(time(5)).until(time(15)),
            AttemptQuery::new().outcome(AttemptOutcome::Delivered),
            AttemptQuery::new().outcome(AttemptOutcome::Retrying),
            AttemptQuery::new().outcome(AttemptOutcome::GivenUp),
            AttemptQuery::new().event(&e2).owner(&o1),
            AttemptQuery::new().subscription(&s2).outcome(AttemptOutcome::Retrying),
            AttemptQuery::new().owner(&o2).since(time(3)).until(time(20)),
            AttemptQuery::new()
                .event(&e1)
                .subscription(&s1)
                .owner(&o1)
                .since(time(0))
                .until(time(23))
                .outcome(AttemptOutcome::Delivered),
            AttemptQuery::new().event(&e1).subscription(self.name("nobody")),
        ];
        for query in cases {
            let wanted: Vec<usize> = (0..N).rev().filter(|&n| query.matches(&written[n])).collect();
            let got = self.mine(query.clone().limit(MAX_PAGE)).await?;
            ensure!(got == wanted, "{query:?} gave records {got:?}, wanted {wanted:?}");
        }
        Ok(())
    }

    async fn pagination(&self) -> Outcome {
        let (event, other) = (self.name("evt"), self.name("other"));
        let mut batch = Vec::new();
        for n in 0..30 {
            // 23 of the event, 7 of another between them.
            let e = if n % 4 == 3 && n < 28 { &other } else { &event };
            batch.push(self.record(n, e, self.base - minutes(30 - n as i64)));
        }
        self.write(&batch[..11]).await?;
        self.write(&batch[11..]).await?;
        let of_event: Vec<usize> = (0..30).rev().filter(|&n| batch[n].event_id == event).collect();
        ensure!(of_event.len() == 23, "the check wrote {} records of its event, not 23", of_event.len());
        for limit in [1, 4, 7, 23, 50] {
            let got = self.mine(AttemptQuery::new().event(&event).limit(limit)).await?;
            ensure!(got == of_event, "pages of {limit} gave {got:?}, wanted {of_event:?}");
        }
        let retrying = AttemptQuery::new().event(&event).outcome(AttemptOutcome::Retrying);
        let wanted: Vec<usize> = of_event.iter().copied().filter(|&n| retrying.matches(&batch[n])).collect();
        let got = self.mine(retrying.limit(3)).await?;
        ensure!(got == wanted, "pages of 3 of the retrying gave {got:?}, wanted {wanted:?}");
        // A page that holds them all says there is no next one.
        let page =
            self.log.query(&AttemptQuery::new().event(&event).limit(50)).await.map_err(|e| log_err("query", e))?;
        ensure!(page.records.len() == 23, "one page of 50 held {} of the 23", page.records.len());
        ensure!(page.next.is_none(), "a page holding every record gave a next cursor");
        Ok(())
    }

    async fn invalid_cursor(&self) -> Outcome {
        let event = self.name("evt");
        self.write(&[self.record(0, &event, self.base)]).await?;
        let overflow = "9".repeat(40);
        for cursor in ["", "not a cursor", "' OR '1'='1", "12abc", "-", "東京", overflow.as_str()] {
            match self.log.query(&AttemptQuery::new().event(&event).after(cursor)).await {
                Err(AttemptLogError::InvalidQuery(_)) => {}
                Err(e) => return Err(format!("cursor {cursor:?} failed with {e}, not AttemptLogError::InvalidQuery")),
                Ok(page) => return Err(format!("cursor {cursor:?} was taken: {} record(s)", page.records.len())),
            }
        }
        Ok(())
    }

    async fn owner_isolation(&self) -> Outcome {
        let event = self.name("evt");
        let acme = self.name("acme");
        let owners =
            [Some(acme.clone()), Some(acme.to_uppercase()), Some(format!("{acme} ")), Some(format!("{acme}x")), None];
        let mut written = Vec::new();
        for (i, owner) in owners.iter().enumerate() {
            for k in 0..2 {
                let n = i * 2 + k;
                let mut r = self.record(n, &event, self.base - minutes(20 - n as i64));
                r.owner_id = owner.clone();
                r.subscription_id = Some(self.name("sub"));
                written.push(r);
            }
        }
        self.write(&written).await?;
        for (i, owner) in owners.iter().enumerate() {
            let Some(owner) = owner else { continue };
            let wanted = vec![i * 2 + 1, i * 2];
            for query in [
                AttemptQuery::new().owner(owner).limit(1),
                AttemptQuery::new().owner(owner).event(&event),
                AttemptQuery::new().owner(owner).subscription(self.name("sub")).limit(2),
            ] {
                let got = self.all(query.clone()).await?;
                ensure!(
                    got.iter().all(|r| r.owner_id.as_ref() == Some(owner)),
                    "owner {owner:?} was given another owner's record: {:?}",
                    got.iter().map(|r| r.owner_id.clone()).collect::<Vec<_>>()
                );
                let mine: Vec<usize> = got.iter().filter_map(|r| self.number(r)).collect();
                ensure!(mine == wanted, "{query:?} gave records {mine:?}, wanted {wanted:?}");
            }
        }
        let none = self.all(AttemptQuery::new().owner(self.name("nobody"))).await?;
        ensure!(none.is_empty(), "an owner with no record was given {} record(s)", none.len());
        Ok(())
    }

    async fn round_trip(&self) -> Outcome {
        let event = self.name("evt");
        let started = Utc::now().trunc_subsecs(6);
        // 4,096 bytes: 341 times 12 bytes of 1- to 4-byte characters, then 4.
        let body = "東京🎉é".repeat(341) + "abcd";
        ensure!(body.len() == 4096, "the check's body is {} bytes", body.len());
        let mut full = self.record(0, &event, started);
        full.subscription_id = Some(self.name("sub"));
        full.owner_id = Some(format!("tenant \"東京\" {}", self.tag));
        full.attempt = 4_000_000_000;
        full.duration_ms = 9_007_199_254_740_991;
        full.outcome = AttemptOutcome::GivenUp;
        full.status = Some(503);
        full.error_kind = Some("status".into());
        full.error = Some("503 \"Service Unavailable\": it's \\ down\n\tline 2 ünï 🎉".into());
        full.response.retry_after = Some("Wed, 21 Oct 2015 07:28:00 GMT".into());
        full.response.content_type = Some("application/json; charset=utf-8".into());
        full.response.body = body;
        full.response.body_truncated = true;
        let mut bare = self.record(1, &event, started + chrono::TimeDelta::microseconds(1));
        bare.outcome = AttemptOutcome::Delivered;
        bare.status = Some(204);
        let mut nul = self.record(2, &event, started + chrono::TimeDelta::microseconds(2));
        nul.response.body = "a\0b".into();
        self.write(&[full.clone(), bare.clone(), nul.clone()]).await?;
        let got = self.all(AttemptQuery::new().event(&event)).await?;
        ensure!(got.len() == 3, "3 records written, {} read back", got.len());
        for r in &got {
            match self.number(r) {
                Some(0) => ensure!(unnumbered(r) == full, "the full record came back as {r:?}, written as {full:?}"),
                Some(1) => ensure!(unnumbered(r) == bare, "the bare record came back as {r:?}, written as {bare:?}"),
                Some(2) => {
                    let mut replaced = nul.clone();
                    replaced.response.body = "a\u{FFFD}b".into();
                    let back = unnumbered(r);
                    ensure!(back == nul || back == replaced, "the NUL body came back as {:?}", r.response.body);
                }
                _ => return Err(format!("a record not written came back: {r:?}")),
            }
        }
        Ok(())
    }

    async fn prune_by_age(&self) -> Outcome {
        self.empty().await?;
        // A year ahead: later than anything the log holds.
        let now = self.base + chrono::TimeDelta::days(365);
        let event = self.name("evt");
        let mut written: Vec<AttemptRecord> = (0..20)
            .map(|n| self.record(n, &event, now - chrono::TimeDelta::days(10) + chrono::TimeDelta::seconds(n as i64)))
            .collect();
        written
            .extend((20..30).map(|n| self.record(n, &event, now - minutes(60) + chrono::TimeDelta::seconds(n as i64))));
        self.write(&written[..12]).await?;
        self.write(&written[12..]).await?;
        let keep_all = Retention::default().max_age(Duration::from_secs(5 * 86400)).batch_size(7);
        let early = self.prune_all(&keep_all, now - chrono::TimeDelta::days(20)).await?;
        ensure!(early == 0, "prune deleted {early} record(s) when none was older than the cutoff");
        let forever = self.prune_all(&Retention::default().forever().batch_size(7), now).await?;
        ensure!(forever == 0, "Retention::forever() deleted {forever} record(s)");
        let deleted = self.prune_all(&keep_all, now).await?;
        ensure!(deleted == 20, "prune by age deleted {deleted} record(s), wanted the 20 older than 5 days");
        let left = self.mine(AttemptQuery::new().limit(MAX_PAGE)).await?;
        let wanted: Vec<usize> = (20..30).rev().collect();
        ensure!(left == wanted, "after pruning by age, records {left:?} are left, wanted {wanted:?}");
        let again = self.prune_all(&keep_all, now).await?;
        ensure!(again == 0, "a second prune by age deleted {again} more");
        Ok(())
    }

    async fn prune_by_count(&self) -> Outcome {
        self.empty().await?;
        let event = self.name("evt");
        let now = self.base + chrono::TimeDelta::days(365);
        let written: Vec<AttemptRecord> =
            (0..25).map(|n| self.record(n, &event, now - minutes(30) + chrono::TimeDelta::seconds(n as i64))).collect();
        self.write(&written[..10]).await?;
        self.write(&written[10..]).await?;
        let roomy = Retention::default().forever().max_count(25).batch_size(4);
        let none = self.prune_all(&roomy, now).await?;
        ensure!(none == 0, "prune with max_count 25 deleted {none} of 25");
        let ten = Retention::default().forever().max_count(10).batch_size(4);
        let deleted = self.prune_all(&ten, now).await?;
        ensure!(deleted == 15, "prune to 10 deleted {deleted} of 25, wanted 15");
        let left = self.mine(AttemptQuery::new().limit(MAX_PAGE)).await?;
        let wanted: Vec<usize> = (15..25).rev().collect();
        ensure!(left == wanted, "after pruning to 10, records {left:?} are left, wanted the newest {wanted:?}");
        let again = self.prune_all(&ten, now).await?;
        ensure!(again == 0, "a second prune to 10 deleted {again} more");
        // Age and count together share one batch.
        let both = Retention::default().max_age(Duration::from_secs(86400)).max_count(4).batch_size(5);
        let deleted = self.prune_all(&both, now).await?;
        ensure!(deleted == 6, "prune to 4 (and by age, nothing that old) deleted {deleted} of 10, wanted 6");
        let left = self.mine(AttemptQuery::new().limit(MAX_PAGE)).await?;
        ensure!(left == [24, 23, 22, 21], "after pruning to 4, records {left:?} are left");
        Ok(())
    }
}
