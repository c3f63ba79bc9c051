//! Series that name a pod (through `pod`, `pod-name` or `ip` contexts, or the
//! `source_pod`/`source_ip`-style `labelsContext` labels) are removed once the pod has
//! been gone for a while (`deleted_pod_metrics_after_s`, a minute as in Cilium), so a cluster with pod churn does not
//! grow its Hubble metrics forever.
//!
//! Every flow counted with such labels records (pod, labels); every family registers
//! itself. A sweep (the plugin calls [`PodSeries::sweep`] with the pods that exist) starts
//! a pod's clock when it is missing and removes its label sets from every family when the
//! clock runs out. A pod that comes back (same namespace and name) keeps its series.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::{Family, MetricConstructor};

use super::Labels;

/// A pod, by namespace and name.
pub type PodKey = (String, String);

/// A metric family series can be removed from.
trait RemoveSeries: Send + Sync {
    fn remove_series(&self, labels: &Labels) -> bool;
}

impl<M, C> RemoveSeries for Family<Labels, M, C>
where
    M: Send + Sync,
    C: MetricConstructor<M> + Send + Sync,
{
    fn remove_series(&self, labels: &Labels) -> bool {
        self.remove(labels)
    }
}

#[derive(Default)]
struct Inner {
    families: Vec<Box<dyn RemoveSeries>>,
    by_pod: HashMap<PodKey, HashSet<Labels>>,
    missing_since: HashMap<PodKey, Instant>,
}

/// The pod-specific series of all Hubble metrics. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct PodSeries {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for PodSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSeries")
            .field("pods", &self.lock().by_pod.len())
            .finish()
    }
}

impl PodSeries {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Series of `family` will be removed with their pods.
    pub fn watch<M, C>(&self, family: &Family<Labels, M, C>)
    where
        M: Send + Sync + 'static,
        C: MetricConstructor<M> + Clone + Send + Sync + 'static,
    {
        self.lock().families.push(Box::new(family.clone()));
    }

    /// `labels` name `pods`.
    pub fn record(&self, pods: &[PodKey], labels: &Labels) {
        if pods.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for pod in pods {
            let sets = inner.by_pod.entry(pod.clone()).or_default();
            if !sets.contains(labels) {
                sets.insert(labels.clone());
            }
        }
    }

    /// Pods with series, for tests and the sweep.
    pub fn pods(&self) -> Vec<PodKey> {
        self.lock().by_pod.keys().cloned().collect()
    }

    /// Starts the clock of pods with series that are not in `existing`, stops it for
    /// those back, and removes the series of pods missing for `after`. Returns how many
    /// series were removed.
    pub fn sweep_after(&self, existing: &HashSet<PodKey>, now: Instant, after: Duration) -> usize {
        let mut inner = self.lock();
        let Inner {
            families,
            by_pod,
            missing_since,
        } = &mut *inner;
        missing_since.retain(|pod, _| !existing.contains(pod) && by_pod.contains_key(pod));
        let mut expired = Vec::new();
        for pod in by_pod.keys().filter(|p| !existing.contains(*p)) {
            let since = *missing_since.entry(pod.clone()).or_insert(now);
            if now.saturating_duration_since(since) >= after {
                expired.push(pod.clone());
            }
        }
        let mut removed = 0;
        for pod in expired {
            missing_since.remove(&pod);
            for labels in by_pod.remove(&pod).unwrap_or_default() {
                removed += families.iter().filter(|f| f.remove_series(&labels)).count();
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    fn pod(name: &str) -> PodKey {
        ("shop".into(), name.into())
    }

    fn labels(pod: &str) -> Labels {
        vec![("source_pod".into(), pod.into())]
    }

    #[test]
    fn a_deleted_pods_series_go_after_the_delay_and_only_theirs() {
        let series = PodSeries::default();
        let family = Family::<Labels, Counter>::default();
        series.watch(&family);
        for name in ["web-1", "web-2"] {
            family.get_or_create(&labels(name)).inc();
            series.record(&[pod(name)], &labels(name));
        }
        let t0 = Instant::now();
        let only_web2: HashSet<PodKey> = [pod("web-2")].into();
        assert_eq!(
            series.sweep_after(&only_web2, t0, Duration::from_secs(60)),
            0
        );
        assert!(
            family.get(&labels("web-1")).is_some(),
            "kept during the delay"
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            series.sweep_after(&only_web2, later, Duration::from_secs(60)),
            1
        );
        assert!(family.get(&labels("web-1")).is_none(), "removed after it");
        assert!(
            family.get(&labels("web-2")).is_some(),
            "the live pod's stays"
        );
        assert_eq!(series.pods(), vec![pod("web-2")]);
    }

    #[test]
    fn a_pod_that_comes_back_keeps_its_series() {
        let series = PodSeries::default();
        let family = Family::<Labels, Counter>::default();
        series.watch(&family);
        family.get_or_create(&labels("web-1")).inc();
        series.record(&[pod("web-1")], &labels("web-1"));
        let t0 = Instant::now();
        let none = HashSet::new();
        let back: HashSet<PodKey> = [pod("web-1")].into();
        series.sweep_after(&none, t0, Duration::from_secs(60));
        series.sweep_after(&back, t0 + Duration::from_secs(30), Duration::from_secs(60));
        // Missing again: the clock starts over.
        assert_eq!(
            series.sweep_after(&none, t0 + Duration::from_secs(70), Duration::from_secs(60)),
            0
        );
        assert!(family.get(&labels("web-1")).is_some());
    }
}
