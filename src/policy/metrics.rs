//! Counters of what the daemon did, rendered in the Prometheus text format.

use crate::policy::workload::WorkloadId;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Requests sent, by what was asked (a verb or a kind of request) and the
/// status answered (`error` when there was no answer).
pub type Counts = std::collections::BTreeMap<(&'static str, String), u64>;

/// Totals of one kind of pass.
#[derive(Debug, Default)]
pub struct Passes {
    /// Passes that completed without a failure.
    pub succeeded: u64,
    /// Passes with at least one failed request.
    pub failed: u64,
    /// How long the last pass took.
    pub last_duration: Duration,
    /// When a pass last completed without a failure.
    pub last_success: Option<SystemTime>,
}

impl Passes {
    /// Records one finished pass.
    pub fn record(&mut self, ok: bool, took: Duration) {
        self.last_duration = took;
        if ok {
            self.succeeded += 1;
            self.last_success = Some(SystemTime::now());
        } else {
            self.failed += 1;
        }
    }
}

/// Everything `/metrics` shows.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Rollouts per workload.
    pub reloads: BTreeMap<WorkloadId, u64>,
    /// Rollouts per workload that renewed its dynamic secrets.
    pub renewals: BTreeMap<WorkloadId, u64>,
    /// The next renewal due time per workload (Unix seconds).
    pub next_renewal: BTreeMap<WorkloadId, u64>,
    /// Workloads whose dynamic secrets' lifetime could not be determined.
    pub lifetime_unknown: usize,
    /// Collector passes.
    pub collector: Passes,
    /// Reloader passes.
    pub reloader: Passes,
    /// The last finished reloader pass's duration over
    /// `--reloader-run-period` ([`crate::policy::cost::judge`]).
    pub reloader_period_share: f64,
    /// Workloads rolled out by the daemon whose rollout is in progress,
    /// changed ones waiting for their turn, and changed ones held by a
    /// failed rollout.
    pub rollouts: (usize, usize, usize),
    /// Secrets the last finished reloader pass ran out of its period
    /// before asking about: its namespaces go on next pass.
    pub secrets_carried: usize,
    /// Whether the last finished reloader pass was over its period
    /// ([`crate::policy::cost::Pass::over`]): not exported, it keeps the
    /// notices to one per change.
    pub reloader_over: bool,
    /// Secret version lookups that got an answer.
    pub vault_lookups_ok: u64,
    /// Secret version lookups that failed.
    pub vault_lookups_failed: u64,
    /// References of workloads to secrets that the last pass found denied,
    /// missing or unreadable, by namespace and that reason: namespaces
    /// with such references only, replaced by each finished pass.
    pub unavailable: BTreeMap<(String, &'static str), u64>,
    /// Opted-in workloads in the index.
    pub watched_workloads: usize,
    /// ConfigMaps that opted-in workloads name, found and followed.
    pub watched_config_maps: usize,
    /// Secrets that opted-in workloads name, found and followed
    /// (`--follow-secret-refs`).
    pub watched_kube_secrets: usize,
    /// Distinct secrets they use.
    pub secrets: usize,
    /// Open watch streams, and the scopes (kinds × namespaces) followed.
    pub watch_streams: (usize, usize),
    /// Watch events applied.
    pub watch_events: u64,
    /// Whether this replica acts (always true without leader election).
    pub leader: bool,
    /// Kubernetes API requests by verb and status.
    pub kube_requests: Counts,
    /// Vault requests by kind and status.
    pub vault_requests: Counts,
}

impl Metrics {
    /// Adds request counts taken from a client, and hands them back.
    pub fn add(counts: &mut Counts, more: Counts) -> Counts {
        for (key, n) in &more {
            *counts.entry(key.clone()).or_default() += n;
        }
        more
    }
}

impl Metrics {
    /// Records a reloader pass's renewals: `renewed` workloads count one
    /// more; when the pass `finished`, the due times and the unknown count
    /// are replaced. Workloads `kept` rejects are forgotten.
    pub fn record_renewals(
        &mut self,
        renewed: &[WorkloadId],
        finished: Option<(&BTreeMap<WorkloadId, u64>, usize)>,
        kept: &dyn Fn(&WorkloadId) -> bool,
    ) {
        for id in renewed {
            *self.renewals.entry(id.clone()).or_default() += 1;
        }
        if let Some((next, unknown)) = finished {
            self.next_renewal = next.clone();
            self.lifetime_unknown = unknown;
        }
        self.renewals.retain(|id, _| kept(id));
        self.next_renewal.retain(|id, _| kept(id));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_rollouts(&mut out);
        self.render_passes(&mut out);
        self.render_index(&mut out);
        self.render_requests(&mut out);
        out
    }

    /// Rollouts and renewals, per workload.
    fn render_rollouts(&self, out: &mut String) {
        header(
            out,
            "reloads_total",
            "counter",
            "Rollouts started because a secret changed or dynamic secrets were renewed.",
        );
        per_workload(out, "reloads_total", &self.reloads);
        header(
            out,
            "dynamic_secret_renewals_total",
            "counter",
            "Rollouts started to renew dynamic secrets before their credentials expire.",
        );
        per_workload(out, "dynamic_secret_renewals_total", &self.renewals);
        header(
            out,
            "dynamic_secret_next_renewal_timestamp_seconds",
            "gauge",
            "When each workload's dynamic secrets are next due for renewal.",
        );
        per_workload(
            out,
            "dynamic_secret_next_renewal_timestamp_seconds",
            &self.next_renewal,
        );
        header(
            out,
            "dynamic_secret_lifetime_unknown_workloads",
            "gauge",
            "Workloads whose dynamic secrets' lifetime could not be determined (not renewed).",
        );
        let _ = writeln!(
            out,
            "{PREFIX}dynamic_secret_lifetime_unknown_workloads {}",
            self.lifetime_unknown
        );
    }

    /// Passes: results, durations, share of the period, last success.
    fn render_passes(&self, out: &mut String) {
        let passes = [("collector", &self.collector), ("reloader", &self.reloader)];
        header(out, "passes_total", "counter", "Passes by result.");
        for (pass, stats) in passes {
            for (result, n) in [("success", stats.succeeded), ("failure", stats.failed)] {
                let _ = writeln!(
                    out,
                    "{PREFIX}passes_total{{pass=\"{pass}\",result=\"{result}\"}} {n}"
                );
            }
        }
        header(
            out,
            "pass_duration_seconds",
            "gauge",
            "Duration of the last pass.",
        );
        for (pass, stats) in passes {
            let seconds = stats.last_duration.as_secs_f64();
            let _ = writeln!(
                out,
                "{PREFIX}pass_duration_seconds{{pass=\"{pass}\"}} {seconds:.6}"
            );
        }
        header(
            out,
            "pass_period_ratio",
            "gauge",
            "Duration of the last reloader pass over --reloader-run-period; over 1, passes run back to back.",
        );
        let _ = writeln!(
            out,
            "{PREFIX}pass_period_ratio{{pass=\"reloader\"}} {:.3}",
            self.reloader_period_share
        );
        header(
            out,
            "rollouts",
            "gauge",
            "Workloads the reloader rolled out whose rollout is in progress, changed ones pending their turn (--max-concurrent-rollouts, --canary-rollouts, paused), and changed ones held because a rollout of the same secret version failed.",
        );
        let (rolling, pending, held) = self.rollouts;
        let _ = writeln!(out, "{PREFIX}rollouts{{state=\"in_progress\"}} {rolling}");
        let _ = writeln!(out, "{PREFIX}rollouts{{state=\"pending\"}} {pending}");
        let _ = writeln!(out, "{PREFIX}rollouts{{state=\"held\"}} {held}");
        header(
            out,
            "secrets_carried_over",
            "gauge",
            "Secrets the last reloader pass ran out of its period before asking about; their namespaces go on next pass, the others are not delayed.",
        );
        let _ = writeln!(out, "{PREFIX}secrets_carried_over {}", self.secrets_carried);
        header(
            out,
            "last_success_timestamp_seconds",
            "gauge",
            "When a pass last succeeded.",
        );
        for (pass, stats) in passes {
            let at = stats
                .last_success
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let _ = writeln!(
                out,
                "{PREFIX}last_success_timestamp_seconds{{pass=\"{pass}\"}} {at}"
            );
        }
    }

    /// Lookups, and what the index and the watch streams hold.
    fn render_index(&self, out: &mut String) {
        header(
            out,
            "vault_lookups_total",
            "counter",
            "Secret version lookups by result.",
        );
        for (result, n) in [
            ("success", self.vault_lookups_ok),
            ("failure", self.vault_lookups_failed),
        ] {
            let _ = writeln!(
                out,
                "{PREFIX}vault_lookups_total{{result=\"{result}\"}} {n}"
            );
        }
        header(
            out,
            "unavailable_secrets",
            "gauge",
            "Secrets used by workloads that the last pass found denied (403), missing (404) or \
             unreadable (current version deleted or destroyed), by namespace: one per workload using each.",
        );
        for ((namespace, reason), n) in &self.unavailable {
            let _ = writeln!(
                out,
                "{PREFIX}unavailable_secrets{{namespace=\"{namespace}\",reason=\"{reason}\"}} {n}"
            );
        }
        header(out, "watched_workloads", "gauge", "Opted-in workloads.");
        let _ = writeln!(out, "{PREFIX}watched_workloads {}", self.watched_workloads);
        header(
            out,
            "watched_configmaps",
            "gauge",
            "ConfigMaps the watched workloads take references from.",
        );
        let _ = writeln!(
            out,
            "{PREFIX}watched_configmaps {}",
            self.watched_config_maps
        );
        header(
            out,
            "watched_secrets",
            "gauge",
            "Distinct secrets the watched workloads use.",
        );
        let _ = writeln!(out, "{PREFIX}watched_secrets {}", self.secrets);
        header(
            out,
            "watch_streams",
            "gauge",
            "Watch streams open (state=\"open\") and wanted (one per kind and namespace).",
        );
        let (open, wanted) = self.watch_streams;
        let _ = writeln!(out, "{PREFIX}watch_streams{{state=\"open\"}} {open}");
        let _ = writeln!(out, "{PREFIX}watch_streams{{state=\"wanted\"}} {wanted}");
        header(
            out,
            "watch_events_total",
            "counter",
            "Watch events applied to the index (changes and bookmarks).",
        );
        let _ = writeln!(out, "{PREFIX}watch_events_total {}", self.watch_events);
    }

    /// Requests by server, and leadership.
    fn render_requests(&self, out: &mut String) {
        header(
            out,
            "kubernetes_requests_total",
            "counter",
            "API server requests by verb and status.",
        );
        for ((verb, code), n) in &self.kube_requests {
            let _ = writeln!(
                out,
                "{PREFIX}kubernetes_requests_total{{verb=\"{verb}\",code=\"{code}\"}} {n}"
            );
        }
        header(
            out,
            "vault_requests_total",
            "counter",
            "Vault requests by kind and status.",
        );
        for ((kind, code), n) in &self.vault_requests {
            let _ = writeln!(
                out,
                "{PREFIX}vault_requests_total{{request=\"{kind}\",code=\"{code}\"}} {n}"
            );
        }
        header(
            out,
            "leader",
            "gauge",
            "1 while this replica holds the Lease and acts.",
        );
        let _ = writeln!(out, "{PREFIX}leader {}", u8::from(self.leader));
    }
}

const PREFIX: &str = "vault_secrets_reloader_";

/// One line per workload: `NAME{kind,namespace,name} VALUE`.
fn per_workload(out: &mut String, name: &str, values: &BTreeMap<WorkloadId, u64>) {
    for (id, value) in values {
        let _ = writeln!(
            out,
            "{PREFIX}{name}{{kind=\"{}\",namespace=\"{}\",name=\"{}\"}} {value}",
            id.kind.name(),
            id.namespace,
            id.name
        );
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::workload::Kind;

    /// The alerting rules and their promtool tests (scripts/alerts.sh) name
    /// only metrics that `/metrics` shows: a renamed metric breaks this,
    /// not the alerts silently.
    #[test]
    fn the_alerts_name_only_rendered_metrics() {
        let rendered: Vec<String> = Metrics::default()
            .render()
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .map(String::from)
            .collect();
        let root = env!("CARGO_MANIFEST_DIR");
        for file in [
            "manifests/optional/alerts.rules.yml",
            "tests/alerts/rules.test.yml",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
            let mut named = 0;
            for (at, _) in text.match_indices(PREFIX) {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    rendered.contains(&name),
                    "{file} names {name}, not in /metrics"
                );
                named += 1;
            }
            assert!(named > 0, "{file} names no metric");
        }
    }

    #[test]
    fn renders_counters_with_labels() {
        let mut metrics = Metrics::default();
        let id = WorkloadId {
            kind: Kind::StatefulSet,
            namespace: "ns".into(),
            name: "db".into(),
        };
        metrics.reloads.insert(id.clone(), 2);
        let next = [(id.clone(), 1_800_000_013)].into();
        metrics.record_renewals(std::slice::from_ref(&id), Some((&next, 3)), &|_| true);
        metrics.reloader.record(true, Duration::from_millis(1500));
        metrics.reloader_period_share = 0.75;
        metrics.secrets_carried = 4321;
        metrics.rollouts = (5, 35, 2);
        metrics.collector.record(false, Duration::ZERO);
        metrics.secrets = 7;
        metrics.unavailable = [(("ns".into(), "denied"), 2)].into();
        metrics.watch_streams = (2, 3);
        metrics.watch_events = 11;
        Metrics::add(
            &mut metrics.kube_requests,
            [(("patch", "409".to_string()), 2)].into(),
        );
        let text = metrics.render();
        for line in [
            "vault_secrets_reloader_reloads_total{kind=\"StatefulSet\",namespace=\"ns\",name=\"db\"} 2",
            "vault_secrets_reloader_passes_total{pass=\"reloader\",result=\"success\"} 1",
            "vault_secrets_reloader_passes_total{pass=\"collector\",result=\"failure\"} 1",
            "vault_secrets_reloader_pass_duration_seconds{pass=\"reloader\"} 1.500000",
            "vault_secrets_reloader_pass_period_ratio{pass=\"reloader\"} 0.750",
            "vault_secrets_reloader_secrets_carried_over 4321",
            "vault_secrets_reloader_rollouts{state=\"in_progress\"} 5",
            "vault_secrets_reloader_rollouts{state=\"pending\"} 35",
            "vault_secrets_reloader_rollouts{state=\"held\"} 2",
            "vault_secrets_reloader_last_success_timestamp_seconds{pass=\"collector\"} 0",
            "vault_secrets_reloader_watched_secrets 7",
            "vault_secrets_reloader_unavailable_secrets{namespace=\"ns\",reason=\"denied\"} 2",
            "vault_secrets_reloader_dynamic_secret_renewals_total{kind=\"StatefulSet\",namespace=\"ns\",name=\"db\"} 1",
            "vault_secrets_reloader_dynamic_secret_next_renewal_timestamp_seconds{kind=\"StatefulSet\",namespace=\"ns\",name=\"db\"} 1800000013",
            "vault_secrets_reloader_dynamic_secret_lifetime_unknown_workloads 3",
            "vault_secrets_reloader_watch_streams{state=\"open\"} 2",
            "vault_secrets_reloader_watch_streams{state=\"wanted\"} 3",
            "vault_secrets_reloader_watch_events_total 11",
            "vault_secrets_reloader_kubernetes_requests_total{verb=\"patch\",code=\"409\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        metrics.record_renewals(&[], None, &|_| false);
        assert!(metrics.renewals.is_empty() && metrics.next_renewal.is_empty());
        assert_eq!(
            metrics.lifetime_unknown, 3,
            "an interrupted pass keeps the count"
        );
    }
}
