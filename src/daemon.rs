//! The loop: one thread, a one-second tick, a collector pass and a reloader
//! pass when each is due, and between requests the listener and signals.

use crate::collector::Collector;
use crate::kube::Kube;
use crate::lease::Elector;
use crate::metrics::Metrics;
use crate::pace::Duties;
use crate::reloader::Reloader;
use crate::serve::{Answer, Server};
use crate::wait::{Interest, Meanwhile};
use crate::workload::Index;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_secs(1);
/// The longest the idle loop sleeps when no socket wakes it: how often it
/// looks at the signal flags and the clock.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// During a reloader pass, how often the watch streams are read between
/// two requests: often enough that a change is known within a moment,
/// seldom enough that hundreds of streams cost little beside the requests.
const STREAMS_GAP: Duration = Duration::from_millis(25);

/// Flags the signal handlers set.
#[derive(Clone, Default)]
pub struct Signals {
    /// SIGTERM or SIGINT: stop at the next request boundary.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP: run both passes now.
    pub run_now: Arc<AtomicBool>,
}

impl Signals {
    /// Registers the handlers (they only set flags).
    pub fn install() -> std::io::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let signals = Signals::default();
        signal_hook::flag::register(SIGTERM, Arc::clone(&signals.stop))?;
        signal_hook::flag::register(SIGINT, Arc::clone(&signals.stop))?;
        signal_hook::flag::register(SIGHUP, Arc::clone(&signals.run_now))?;
        Ok(signals)
    }
}

/// The parts the loop drives.
pub struct Daemon {
    /// The API server client.
    pub kube: Kube,
    /// The collector.
    pub collector: Collector,
    /// The reloader.
    pub reloader: Reloader,
    /// The health listener, if one could be bound.
    pub server: Option<Server>,
    /// Signal flags.
    pub signals: Signals,
    /// Collector period.
    pub collector_period: Duration,
    /// Reloader period.
    pub reloader_period: Duration,
    /// Leader election, when enabled: passes run only while leading.
    pub elector: Option<Elector>,
    /// Run one collector and one reloader pass, then return.
    pub once: bool,
}

/// What `/readyz` answers from. A leader (or the only replica) is ready
/// when its last passes reached their servers; a standby when its Lease
/// requests reach the API server, so that it does not hold up a rolling
/// update of the daemon's own Deployment.
#[derive(Default)]
struct Readiness {
    collected: bool,
    reloaded: bool,
    /// `Some(reaches the API server)` while this replica is a standby.
    standby: Option<bool>,
}

impl Readiness {
    fn ready(&self) -> bool {
        match self.standby {
            Some(reaches_api) => reaches_api,
            None => self.collected && self.reloaded,
        }
    }
}

/// What the loop reports, and the listener it answers on. Shared between
/// the loop and the waits inside its requests (as [`Meanwhile`] work), which
/// answer health checks while a request is in flight; neither holds it
/// across a request.
struct Front {
    server: Option<Server>,
    metrics: Metrics,
    readiness: Readiness,
}

impl Front {
    /// Answers the health checks waiting now.
    fn serve(&mut self) {
        if let Some(server) = self.server.as_mut() {
            let (metrics, readiness) = (&self.metrics, &self.readiness);
            server.poll(&|path| answer(path, metrics, readiness));
        }
    }
}

/// The front as a request's wait serves it: only when the loop does not
/// hold it (it never does during a request).
struct Shared(Rc<RefCell<Front>>);

impl Meanwhile for Shared {
    fn interests(&self, out: &mut Vec<Interest>) {
        if let Ok(front) = self.0.try_borrow() {
            if let Some(server) = &front.server {
                server.interests(out);
            }
        }
    }

    fn serve(&mut self) {
        if let Ok(mut front) = self.0.try_borrow_mut() {
            front.serve();
        }
    }
}

/// What the loop keeps doing between requests, and what it reports: the
/// listener, metrics and readiness (the front), the Lease, the stop flag.
struct Duty {
    front: Rc<RefCell<Front>>,
    elector: Option<Elector>,
    stop: Arc<AtomicBool>,
}

impl Duty {
    /// Whether this replica leads now (always without an elector), shown in
    /// the metrics and, for a standby, in its readiness.
    fn lead(&mut self) -> bool {
        let leading = self.elector.as_mut().is_none_or(Elector::tick);
        let mut front = self.front.borrow_mut();
        front.metrics.leader = leading;
        front.readiness.standby = match &self.elector {
            Some(elector) if !leading => Some(elector.reaches_api()),
            _ => None,
        };
        leading
    }

    /// Answers health checks and does `turn` (the collector's reading of
    /// its watch streams, which adds what they wait for) until `deadline`,
    /// a stop, or `run_now`; in between it sleeps until a socket is ready,
    /// at most [`IDLE_POLL`].
    fn idle_until(
        &mut self,
        deadline: Instant,
        run_now: &AtomicBool,
        mut turn: impl FnMut(&mut Duty, &mut Vec<Interest>),
    ) {
        let mut interests = Vec::new();
        loop {
            self.serve();
            interests.clear();
            turn(self, &mut interests);
            let now = Instant::now();
            if now >= deadline || self.stopping() || run_now.load(Ordering::Relaxed) {
                return;
            }
            if let Some(server) = &self.front.borrow().server {
                server.interests(&mut interests);
            }
            crate::wait::until_ready(&interests, IDLE_POLL.min(deadline - now));
        }
    }

    /// Records a collector pass: metrics, readiness and its log line. The
    /// exit code it stands for (`--once`).
    fn collected(
        &mut self,
        report: &crate::collector::Report,
        kube: &mut Kube,
        index: &Index,
        took: Duration,
    ) -> u8 {
        let ok = report.failures == 0 && !report.interrupted;
        let front = &mut *self.front.borrow_mut();
        let metrics = &mut front.metrics;
        let requests = total(Metrics::add(
            &mut metrics.kube_requests,
            kube.take_requests(),
        ));
        if !report.interrupted {
            front.readiness.collected = ok;
            metrics.collector.record(ok, took);
            metrics.watched_workloads = index.len();
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

    /// Records a reloader pass begun at `started`: metrics (forgetting
    /// workloads that are gone), readiness and its log line. The exit code
    /// it stands for (`--once`).
    fn reloaded(
        &mut self,
        report: &crate::reloader::Report,
        kube: &mut Kube,
        reloader: &mut Reloader,
        index: &Index,
        started: Instant,
    ) -> u8 {
        let front = &mut *self.front.borrow_mut();
        let metrics = &mut front.metrics;
        let vault_requests = total(Metrics::add(
            &mut metrics.vault_requests,
            reloader.take_requests(),
        ));
        let kube_requests = total(Metrics::add(
            &mut metrics.kube_requests,
            kube.take_requests(),
        ));
        for id in &report.reloaded {
            *metrics.reloads.entry(id.clone()).or_default() += 1;
        }
        metrics.reloads.retain(|id, _| index.contains_key(id));
        let finished =
            (!report.interrupted).then_some((&report.next_renewal, report.lifetime_unknown));
        metrics.record_renewals(&report.renewed, finished, &|id| index.contains_key(id));
        let ok = report.vault_failures == 0 && report.patch_failures == 0;
        if !report.interrupted {
            front.readiness.reloaded =
                report.vault_failures < report.secrets || report.secrets == 0;
            metrics.reloader.record(ok, started.elapsed());
            metrics.secrets = report.secrets;
            metrics.vault_lookups_failed += report.vault_failures as u64;
            metrics.vault_lookups_ok += report.secrets.saturating_sub(report.vault_failures) as u64;
            metrics.watched_workloads = index.len();
            log::info!(
                "reloader pass: {} secrets, {vault_requests} Vault requests, {} reloaded, \
                 {kube_requests} API requests, {} ms",
                report.secrets,
                report.reloaded.len(),
                started.elapsed().as_millis()
            );
        }
        u8::from(!ok || report.interrupted)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Reads the watch streams into `index` and shows the result in the
    /// metrics.
    fn read_streams(&mut self, collector: &mut Collector, kube: &mut Kube, index: &mut Index) {
        crate::logging::set_worker("collector");
        collector.turn(kube, index, self);
        let metrics = &mut self.front.borrow_mut().metrics;
        metrics.watched_workloads = index.len();
        metrics.watch_streams = collector.watches();
    }
}

/// The duties of a reloader pass: the loop's, and reading the collector's
/// streams at most every [`STREAMS_GAP`].
struct WithStreams<'a> {
    duty: &'a mut Duty,
    collector: &'a mut Collector,
    last_read: Instant,
}

impl Duties for WithStreams<'_> {
    fn serve(&mut self) {
        self.duty.serve();
    }

    fn keep_going(&mut self) -> bool {
        self.duty.keep_going()
    }

    fn refresh(&mut self, kube: &mut Kube, index: &mut Index) {
        if self.last_read.elapsed() < STREAMS_GAP {
            return;
        }
        self.duty.read_streams(self.collector, kube, index);
        crate::logging::set_worker("reloader");
        self.last_read = Instant::now();
    }
}

impl Duties for Duty {
    /// Answers health checks and renews the Lease when due (a request every
    /// 2 s at most): a pass calls this before every request, so a long
    /// listing or a chain of slow lookups never outlasts the Lease. Losing
    /// it is acted on at the next [`Duties::keep_going`].
    fn serve(&mut self) {
        if let Some(elector) = self.elector.as_mut() {
            elector.tick();
        }
        self.front.borrow_mut().serve();
    }

    fn keep_going(&mut self) -> bool {
        let leading = self.elector.as_mut().is_none_or(Elector::tick);
        // Served after the Lease tick, which may just have sent a request:
        // this one answer covers both the pass's last request and the tick.
        self.serve();
        leading && !self.stopping()
    }
}

fn answer(path: &str, metrics: &Metrics, readiness: &Readiness) -> Answer {
    match path {
        "/healthz" | "/livez" => (200, "text/plain", "ok\n".into()),
        "/readyz" => match (readiness.ready(), readiness.standby.is_some()) {
            (true, false) => (200, "text/plain", "ok\n".into()),
            (true, true) => (200, "text/plain", "ok (standby)\n".into()),
            (false, false) => (
                503,
                "text/plain",
                "not ready: the last pass did not reach its server\n".into(),
            ),
            (false, true) => (
                503,
                "text/plain",
                "not ready: standby cannot reach the API server\n".into(),
            ),
        },
        "/metrics" => (200, "text/plain; version=0.0.4", metrics.render()),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

/// How many requests a set of counts holds.
fn total(counts: crate::metrics::Counts) -> u64 {
    counts.values().sum()
}

/// Periods as whole ticks (at least one).
fn ticks(period: Duration) -> u64 {
    (period.as_millis() as u64)
        .div_ceil(TICK.as_millis() as u64)
        .max(1)
}

impl Daemon {
    /// Runs until SIGTERM or SIGINT (or after one round with `once`);
    /// returns the exit code.
    pub fn run(self) -> u8 {
        let Daemon {
            mut kube,
            mut collector,
            mut reloader,
            server,
            signals,
            collector_period,
            reloader_period,
            elector,
            once,
        } = self;
        let front = Rc::new(RefCell::new(Front {
            server,
            metrics: Metrics::default(),
            readiness: Readiness::default(),
        }));
        let meanwhile = crate::wait::set_meanwhile(Some(Box::new(Shared(Rc::clone(&front)))));
        let mut duty = Duty {
            front,
            elector,
            stop: Arc::clone(&signals.stop),
        };
        let collect_every = ticks(collector_period);
        let reload_every = ticks(reloader_period);
        let mut index = Index::new();
        let start = Instant::now();
        let (mut next_collect, mut next_reload) = (0u64, 0u64);
        let mut leading = false;
        let mut code = 0;
        while !duty.stopping() {
            let started = Instant::now();
            let tick = (started - start).as_millis() as u64 / TICK.as_millis() as u64;
            let run_now = signals.run_now.swap(false, Ordering::Relaxed);
            if run_now {
                log::info!("SIGHUP: running both passes now");
            }
            let was_leading = leading;
            leading = duty.lead();
            if leading && !was_leading {
                // A new leader continues at once from the state on the workloads.
                (next_collect, next_reload) = (tick, tick);
            }
            if was_leading && !leading {
                collector.stop_watching();
            }
            if leading && (run_now || tick >= next_collect) {
                next_collect = tick + collect_every;
                crate::logging::set_worker("collector");
                let report = collector.pass(&mut kube, &mut index, &mut duty);
                code = duty.collected(&report, &mut kube, &index, started.elapsed());
            }
            if leading && (run_now || tick >= next_reload) {
                next_reload = tick + reload_every;
                crate::logging::set_worker("reloader");
                let pass_started = Instant::now();
                let mut duties = WithStreams {
                    duty: &mut duty,
                    collector: &mut collector,
                    last_read: pass_started,
                };
                let report = reloader.pass(&mut kube, &mut index, &mut duties);
                let failed = duty.reloaded(&report, &mut kube, &mut reloader, &index, pass_started);
                code = code.max(failed);
                if once {
                    break;
                }
            }
            crate::logging::set_worker("main");
            if let Some(elector) = duty.elector.as_mut() {
                let metrics = &mut duty.front.borrow_mut().metrics;
                Metrics::add(&mut metrics.kube_requests, elector.take_requests());
            }
            let deadline = start + TICK * (tick + 1) as u32;
            duty.idle_until(deadline, &signals.run_now, |duty, interests| {
                if leading {
                    duty.read_streams(&mut collector, &mut kube, &mut index);
                    crate::logging::set_worker("main");
                    collector.interests(interests);
                }
            });
        }
        if let Some(elector) = duty.elector.as_mut() {
            elector.release();
        }
        reloader.revoke_tokens();
        crate::wait::set_meanwhile(meanwhile);
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
    fn the_lease_is_renewed_at_a_request_boundary_not_only_between_steps() {
        use crate::http::fake_server::{self, Reply};
        let server = fake_server::start(|_| Reply::json(404, r#"{"code":404}"#));
        let (kube, _token) = crate::kube::tests::client(&server);
        let elector = Elector::new(kube, "ns".into(), "lease".into(), "me".into());
        let front = Front {
            server: None,
            metrics: Metrics::default(),
            readiness: Readiness::default(),
        };
        let mut duty = Duty {
            front: Rc::new(RefCell::new(front)),
            elector: Some(elector),
            stop: Arc::new(AtomicBool::new(false)),
        };
        duty.serve();
        let asked: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(
            asked.first().map(String::as_str),
            Some("/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease")
        );
        // Not again before it is due.
        let sent = asked.len();
        duty.serve();
        assert_eq!(server.requests().len(), sent);
    }

    #[test]
    fn periods_become_whole_ticks() {
        assert_eq!(ticks(Duration::from_secs(30)), 30);
        assert_eq!(ticks(Duration::from_millis(1500)), 2);
        assert_eq!(ticks(Duration::from_millis(10)), 1);
    }

    #[test]
    fn a_standby_is_ready_when_it_reaches_the_api_server() {
        let metrics = Metrics::default();
        let mut readiness = Readiness {
            standby: Some(true),
            ..Readiness::default()
        };
        assert_eq!(answer("/readyz", &metrics, &readiness).0, 200);
        assert_eq!(answer("/readyz", &metrics, &readiness).2, "ok (standby)\n");
        readiness.standby = Some(false);
        assert_eq!(answer("/readyz", &metrics, &readiness).0, 503);
        // Leading again: its own passes decide.
        readiness.standby = None;
        assert_eq!(answer("/readyz", &metrics, &readiness).0, 503);
    }

    #[test]
    fn readiness_needs_both_passes() {
        let metrics = Metrics::default();
        let mut readiness = Readiness::default();
        assert_eq!(answer("/healthz", &metrics, &readiness).0, 200);
        assert_eq!(answer("/readyz", &metrics, &readiness).0, 503);
        readiness.collected = true;
        readiness.reloaded = true;
        assert_eq!(answer("/readyz", &metrics, &readiness).0, 200);
        assert_eq!(answer("/nope", &metrics, &readiness).0, 404);
        assert!(answer("/metrics", &metrics, &readiness)
            .2
            .contains("watched_workloads 0"));
    }
}
