//! The loop: one thread, a one-second tick, a collector pass and a reloader
//! pass when each is due; in between it sleeps in the [`reactor`], applying
//! watch events as they arrive. Between two steps of a pass it renews the
//! Lease and reads the signals ([`Steps`]); the reactor renews the Lease
//! during requests too.

pub mod config;
pub mod logging;

use crate::collector::index::Index;
use crate::collector::steps::Steps;
use crate::collector::{self, Collector};
use crate::io::reactor::{self, Reactor, Status};
use crate::kube::lease::Elector;
use crate::kube::Kube;
use crate::policy::cost;
use crate::policy::metrics::{Counts, Metrics};
use crate::policy::workload::Source;
use crate::reloader::{self, Reloader};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_secs(1);
/// The longest the idle loop sleeps when no socket wakes it: how often it
/// looks at the signal flags and the clock.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// During a reloader pass, how often the watch streams are read between
/// two steps: often enough that a change is known within a moment,
/// seldom enough that hundreds of streams cost little beside the requests.
const STREAMS_GAP: Duration = Duration::from_millis(25);
/// The longest a round of check-now requests holds the loop; what is left
/// goes on at the next round.
const CHECK_BUDGET: Duration = Duration::from_millis(500);

/// The parts the loop drives.
pub struct Daemon {
    /// The API server client.
    pub kube: Kube,
    /// The collector.
    pub collector: Collector,
    /// The reloader.
    pub reloader: Reloader,
    /// The thread's waits: the health listener and the signals.
    pub reactor: Reactor,
    /// Collector period.
    pub collector_period: Duration,
    /// Reloader period.
    pub reloader_period: Duration,
    /// Leader election, when enabled: passes run only while leading.
    pub elector: Option<Elector>,
    /// Run one collector and one reloader pass, then return.
    pub once: bool,
}

/// The loop's side of a pass's [`Steps`]: the Lease and the stop signal,
/// and during a reloader pass the collector's watch events.
struct Between<'a> {
    lease: &'a Lease,
    /// The collector whose events a reloader pass applies as it goes.
    streams: Option<&'a mut Collector>,
    last_read: Instant,
    /// When the next pass is due: a reloader pass ends there.
    until: Option<Instant>,
}

impl<'a> Between<'a> {
    fn new(lease: &'a Lease, streams: Option<&'a mut Collector>) -> Self {
        Between {
            lease,
            streams,
            last_read: Instant::now(),
            until: None,
        }
    }
}

impl Steps for Between<'_> {
    fn keep_going(&mut self) -> bool {
        self.lease.lead() && !reactor::stopping()
    }

    fn catch_up(&mut self, kube: &mut Kube, index: &mut Index) {
        let Some(collector) = self.streams.as_deref_mut() else {
            return;
        };
        if self.last_read.elapsed() < STREAMS_GAP {
            return;
        }
        crate::daemon::logging::set_worker("collector");
        collector.catch_up(kube, index);
        show_streams(collector, index);
        crate::daemon::logging::set_worker("reloader");
        // A stretch of steps without a request (thousands of workloads
        // decided at rest) would otherwise leave /healthz unanswered.
        reactor::serve_ready();
        self.last_read = Instant::now();
    }

    fn in_time(&self) -> bool {
        self.until.is_none_or(|until| Instant::now() < until)
    }
}

/// Leader election, shared by the loop and the reactor's Lease tick
/// ([`reactor::set_lease_tick`]): the Lease is renewed between steps and
/// at every wait of a request, whichever comes first.
#[derive(Clone)]
struct Lease(Rc<RefCell<Option<Elector>>>);

impl Lease {
    /// Whether this replica leads now (always without an elector): renews
    /// the Lease when due (a request every 2 s at most) and shows the
    /// result in the metrics and, for a standby, in its readiness. While a
    /// renewal is in flight (this is its own request's wait) it answers
    /// from the metrics.
    fn lead(&self) -> bool {
        let Ok(mut elector) = self.0.try_borrow_mut() else {
            return reactor::status(|status| status.metrics.leader).unwrap_or(false);
        };
        let leading = elector.as_mut().is_none_or(Elector::tick);
        let standby = match elector.as_ref() {
            Some(elector) if !leading => Some(elector.reaches_api()),
            _ => None,
        };
        drop(elector);
        reactor::status(|status| {
            status.metrics.leader = leading;
            status.readiness.standby = standby;
        });
        leading
    }

    /// The Lease requests sent since the last call, into the metrics.
    fn count_requests(&self) {
        if let Some(elector) = self.0.borrow_mut().as_mut() {
            let requests = elector.take_requests();
            reactor::status(|status| Metrics::add(&mut status.metrics.kube_requests, requests));
        }
    }

    /// Gives the Lease up, if held.
    fn release(&self) {
        if let Some(elector) = self.0.borrow_mut().as_mut() {
            elector.release();
        }
    }
}

/// Shows the index and the streams in the metrics.
fn show_streams(collector: &Collector, index: &Index) {
    reactor::status(|status| {
        status.metrics.watched_workloads = index.len();
        status.metrics.watched_config_maps = index.sources(Source::ConfigMap);
        status.metrics.watched_kube_secrets = index.sources(Source::Secret);
        status.metrics.watch_streams = collector.watches();
    });
}

/// Records a collector pass: metrics, readiness and its log line. The exit
/// code it stands for (`--once`).
fn collected(
    status: &mut Status,
    report: &collector::Report,
    requests: Counts,
    index: &Index,
    took: Duration,
) -> u8 {
    let ok = report.failures == 0 && !report.interrupted;
    let metrics = &mut status.metrics;
    let requests = total(Metrics::add(&mut metrics.kube_requests, requests));
    if !report.interrupted {
        status.readiness.collected = ok;
        metrics.collector.record(ok, took);
        metrics.watched_workloads = index.len();
        metrics.watched_config_maps = index.sources(Source::ConfigMap);
        metrics.watched_kube_secrets = index.sources(Source::Secret);
        metrics.watch_streams = report.watches;
        metrics.watch_events += report.events;
        log::info!(
            "collector pass: {} workloads opted in, {requests} API requests, {} ms, \
             {} watch events since the last pass, {}/{} watches open",
            index.len(),
            took.as_millis(),
            report.events,
            report.watches.0,
            report.watches.1
        );
    }
    u8::from(!ok)
}

/// What a reloader pass sent (to Vault, to the API server) and how long
/// it took, against its period.
struct Ran {
    vault: Counts,
    kube: Counts,
    took: Duration,
    period: Duration,
}

/// Records a reloader pass: metrics (forgetting workloads that are gone),
/// readiness, its log line with its share of the period, and a notice when
/// passes start or stop outlasting it ([`cost::judge`]). The exit code it
/// stands for (`--once`).
fn reloaded(status: &mut Status, report: &reloader::Report, ran: Ran, index: &Index) -> u8 {
    let metrics = &mut status.metrics;
    let vault_requests = total(Metrics::add(&mut metrics.vault_requests, ran.vault));
    let kube_requests = total(Metrics::add(&mut metrics.kube_requests, ran.kube));
    for id in &report.reloaded {
        *metrics.reloads.entry(id.clone()).or_default() += 1;
    }
    metrics.reloads.retain(|id, _| index.contains_key(id));
    let finished = (!report.interrupted).then_some((&report.next_renewal, report.lifetime_unknown));
    metrics.record_renewals(&report.renewed, finished, &|id| index.contains_key(id));
    let ok = report.vault_failures == 0 && report.patch_failures == 0;
    if !report.interrupted {
        status.readiness.reloaded = report.vault_failures < report.lookups || report.lookups == 0;
        metrics.reloader.record(ok, ran.took);
        metrics.secrets = report.secrets;
        metrics.unavailable = report.unavailable.clone();
        metrics.rollouts = (report.in_progress, report.pending, report.held);
        metrics.vault_lookups_failed += report.vault_failures as u64;
        metrics.vault_lookups_ok += report.lookups.saturating_sub(report.vault_failures) as u64;
        metrics.watched_workloads = index.len();
        let pass = cost::Pass {
            took: ran.took,
            period: ran.period,
            secrets: report.secrets,
            requests: vault_requests + kube_requests,
            carried: &report.carried,
            late: report.late,
        };
        let cost = cost::judge(&pass, metrics.reloader_over);
        metrics.reloader_over = pass.over();
        metrics.reloader_period_share = cost.share;
        metrics.secrets_carried = report.carried.values().sum();
        log::info!(
            "reloader pass: {} secrets, {vault_requests} Vault requests, {} reloaded, \
             {kube_requests} API requests, {} ms, {:.0}% of the period",
            report.secrets,
            report.reloaded.len(),
            ran.took.as_millis(),
            cost.share * 100.0
        );
        if let Some((level, text)) = cost.notice {
            log::log!(level, "{text}");
        }
    }
    u8::from(!ok || report.interrupted)
}

/// How many requests a set of counts holds.
fn total(counts: Counts) -> u64 {
    counts.values().sum()
}

/// Periods as whole ticks (at least one).
fn ticks(period: Duration) -> u64 {
    (period.as_millis() as u64)
        .div_ceil(TICK.as_millis() as u64)
        .max(1)
}

/// The loop's state between ticks.
struct Loop {
    kube: Kube,
    collector: Collector,
    reloader: Reloader,
    lease: Lease,
    index: Index,
    reloader_period: Duration,
}

impl Loop {
    /// A collector pass; its exit code.
    fn collect(&mut self) -> u8 {
        crate::daemon::logging::set_worker("collector");
        let started = Instant::now();
        let mut between = Between::new(&self.lease, None);
        let report = self
            .collector
            .pass(&mut self.kube, &mut self.index, &mut between);
        let requests = self.kube.take_requests();
        let (index, took) = (&self.index, started.elapsed());
        reactor::status(|status| collected(status, &report, requests, index, took)).unwrap_or(0)
    }

    /// A reloader pass, the collector's events applied as it goes, within
    /// `until` (when the next one is due); its exit code.
    fn reload(&mut self, until: Option<Instant>) -> u8 {
        crate::daemon::logging::set_worker("reloader");
        let started = Instant::now();
        let mut between = Between::new(&self.lease, Some(&mut self.collector));
        between.until = until;
        let report = self
            .reloader
            .pass(&mut self.kube, &mut self.index, &mut between);
        let ran = Ran {
            vault: self.reloader.take_requests(),
            kube: self.kube.take_requests(),
            took: started.elapsed(),
            period: self.reloader_period,
        };
        let index = &self.index;
        reactor::status(|status| reloaded(status, &report, ran, index)).unwrap_or(0)
    }

    /// Serves the check-now requests due, within [`CHECK_BUDGET`]: its
    /// rollouts and requests go to the metrics, with a log line.
    fn check(&mut self) {
        crate::daemon::logging::set_worker("reloader");
        let started = Instant::now();
        let mut between = Between::new(&self.lease, Some(&mut self.collector));
        between.until = Some(started + CHECK_BUDGET);
        let Some(report) = self
            .reloader
            .check(&mut self.kube, &mut self.index, &mut between)
        else {
            return;
        };
        let (vault, kube) = (self.reloader.take_requests(), self.kube.take_requests());
        reactor::status(|status| {
            let metrics = &mut status.metrics;
            let vault = total(Metrics::add(&mut metrics.vault_requests, vault));
            let kube = total(Metrics::add(&mut metrics.kube_requests, kube));
            for id in &report.reloaded {
                *metrics.reloads.entry(id.clone()).or_default() += 1;
            }
            log::info!(
                "check now: {} secrets, {vault} Vault requests, {} reloaded, {kube} API \
                 requests, {} ms",
                report.lookups,
                report.reloaded.len(),
                started.elapsed().as_millis()
            );
        });
    }

    /// Sleeps in the reactor until `deadline`, a stop or SIGHUP, applying
    /// the watch events as they arrive, reopening the watches that ended
    /// and serving check-now requests when `leading`. Whether SIGHUP came.
    fn idle_until(&mut self, deadline: Instant, leading: bool) -> bool {
        crate::daemon::logging::set_worker("main");
        self.lease.count_requests();
        let mut streams = Vec::new();
        loop {
            streams.clear();
            if leading {
                crate::daemon::logging::set_worker("collector");
                let mut between = Between::new(&self.lease, None);
                self.collector
                    .turn(&mut self.kube, &mut self.index, &mut between);
                show_streams(&self.collector, &self.index);
                self.check();
                crate::daemon::logging::set_worker("main");
                self.collector.interests(&mut streams);
            }
            let now = Instant::now();
            if reactor::run_now() {
                return true;
            }
            if now >= deadline || reactor::stopping() {
                return false;
            }
            reactor::sleep(&streams, IDLE_POLL.min(deadline - now));
        }
    }
}

impl Daemon {
    /// Runs until SIGTERM or SIGINT (or after one round with `once`);
    /// returns the exit code.
    pub fn run(self) -> u8 {
        let Daemon {
            kube,
            collector,
            reloader,
            reactor,
            collector_period,
            reloader_period,
            elector,
            once,
        } = self;
        reactor.install();
        let lease = Lease(Rc::new(RefCell::new(elector)));
        let ticking = lease.clone();
        reactor::set_lease_tick(Box::new(move || {
            ticking.lead();
        }));
        let mut parts = Loop {
            kube,
            collector,
            reloader,
            lease,
            index: Index::new(),
            reloader_period,
        };
        let (collect_every, reload_every) = (ticks(collector_period), ticks(reloader_period));
        let start = Instant::now();
        let (mut next_collect, mut next_reload) = (0u64, 0u64);
        let (mut leading, mut run_now, mut code) = (false, reactor::run_now(), 0);
        while !reactor::stopping() {
            let tick = start.elapsed().as_millis() as u64 / TICK.as_millis() as u64;
            if run_now {
                log::info!("SIGHUP: running both passes now");
            }
            let was_leading = leading;
            leading = parts.lease.lead();
            if leading && !was_leading {
                // A new leader continues at once from the state on the workloads.
                (next_collect, next_reload) = (tick, tick);
            }
            if was_leading && !leading {
                parts.collector.stop_watching();
                parts.reloader.forget_progress();
            }
            if leading && (run_now || tick >= next_collect) {
                next_collect = tick + collect_every;
                code = parts.collect();
            }
            if leading && (run_now || tick >= next_reload) {
                next_reload = tick + reload_every;
                // Up to when the next pass is due; with --once, no limit.
                let until = (!once).then(|| start + TICK * next_reload as u32);
                code = code.max(parts.reload(until));
                if once {
                    break;
                }
            }
            run_now = parts.idle_until(start + TICK * (tick + 1) as u32, leading);
        }
        parts.lease.release();
        parts.reloader.revoke_tokens();
        Reactor::uninstall();
        log::info!("stopping");
        if once {
            code
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_renewed_between_steps_and_a_stop_ends_the_pass() {
        use crate::io::http::fake_server::{self, Reply};
        let server = fake_server::start(|_| Reply::json(404, r#"{"code":404}"#));
        let (kube, _token) = crate::kube::tests::client(&server);
        let elector = Some(Elector::new(kube, "ns".into(), "lease".into(), "me".into()));
        let lease = Lease(Rc::new(RefCell::new(elector)));
        let signals = reactor::Signals::default();
        Reactor::new(None, signals.clone()).install();
        let mut between = Between::new(&lease, None);
        // The server refuses the Lease: a standby.
        assert!(!between.keep_going());
        let asked: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(
            asked.first().map(String::as_str),
            Some("/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease")
        );
        // Not again before it is due.
        let sent = asked.len();
        between.keep_going();
        assert_eq!(server.requests().len(), sent);
        assert_eq!(reactor::status(|s| s.metrics.leader), Some(false));
        // Without an elector the replica leads, until SIGTERM.
        let alone = Lease(Rc::new(RefCell::new(None)));
        let mut between = Between::new(&alone, None);
        assert!(between.keep_going());
        assert_eq!(reactor::status(|s| s.metrics.leader), Some(true));
        signals
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!between.keep_going(), "SIGTERM stops the pass");
        Reactor::uninstall();
    }

    #[test]
    fn the_lease_is_renewed_while_one_request_waits_long() {
        use crate::io::http::fake_server::{self, Reply};
        let lease_server = fake_server::start(|_| Reply::json(404, r#"{"code":404}"#));
        let (kube, _token) = crate::kube::tests::client(&lease_server);
        let elector = Some(Elector::new(kube, "ns".into(), "lease".into(), "me".into()));
        let lease = Lease(Rc::new(RefCell::new(elector)));
        Reactor::new(None, reactor::Signals::default()).install();
        let ticking = lease.clone();
        reactor::set_lease_tick(Box::new(move || {
            ticking.lead();
        }));
        // One request answered after 4.5 s: longer than two Lease retries.
        let slow = fake_server::start(|_| {
            std::thread::sleep(Duration::from_millis(4500));
            Reply::json(200, "{}")
        });
        let agent = crate::io::http::agent(
            Duration::from_secs(10),
            &crate::io::http::Tls::default(),
            None,
        )
        .unwrap();
        let lease_path = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease";
        agent.get(format!("{}/slow", slow.url)).call().unwrap();
        Reactor::uninstall();
        let asked = lease_server.hits(lease_path);
        assert!(asked >= 3, "the Lease was looked at {asked} times");
    }

    #[test]
    fn health_checks_are_answered_between_steps_that_send_no_request() {
        use crate::io::http::fake_server::{self, Reply};
        use std::io::{Read, Write};
        let server = crate::io::serve::Server::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        Reactor::new(Some(server), reactor::Signals::default()).install();
        let api = fake_server::start(|_| Reply::json(404, "{}"));
        let (mut kube, _token) = crate::kube::tests::client(&api);
        let mut collector = Collector::new(&[], &[], &[]).without_watches();
        let mut index = Index::new();
        let alone = Lease(Rc::new(RefCell::new(None)));
        let mut between = Between::new(&alone, Some(&mut collector));
        let prober = std::thread::spawn(move || {
            let mut client = std::net::TcpStream::connect(address).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            client
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut reply = vec![0; 64];
            let n = client.read(&mut reply).unwrap_or(0);
            String::from_utf8_lossy(&reply[..n]).into_owned()
        });
        // Steps of a pass that sends nothing: only the catching up between.
        for _ in 0..40 {
            std::thread::sleep(STREAMS_GAP);
            between.catch_up(&mut kube, &mut index);
        }
        let reply = prober.join().unwrap();
        Reactor::uninstall();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply:?}");
    }

    #[test]
    fn periods_become_whole_ticks() {
        assert_eq!(ticks(Duration::from_secs(30)), 30);
        assert_eq!(ticks(Duration::from_millis(1500)), 2);
        assert_eq!(ticks(Duration::from_millis(10)), 1);
    }
}
