//! The controller: runs [`reconcile`] for a service whenever it or one of
//! its tasks changes (the store's change feed), when a plan asks to be run
//! again later, and for every service every [`RESYNC`] as a safety net;
//! then carries out the plan.
//!
//! A plan is carried out in one transaction: the service record (guarded
//! by its revision), the new tasks (placed on workers from the capacity
//! the store holds) with their index keys and the reservations they make
//! (guarded by the reservations' revision), and the stopped tasks (each
//! guarded by its revision). The controller never calls an agent: the
//! agent reads the committed tasks from the store. A conflict (the API or
//! the ledger wrote meanwhile) reconciles again from what is stored.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::capacity;
use super::expr::{Expr, Op, Subject};
use super::leader::{Leadership, NodeLease, LEADER_KEY};
use super::placer::Placer;
use super::reconcile::{live, reconcile_daemon, reconcile_draining, Ids};
use crate::model::definitions::{self, DefinitionRecord, FamilyRecord};
use crate::model::service::{self, DeploymentStatus, ServiceRecord, ServiceStatus};
use crate::model::task::{self, ContainerStatus, DesiredStatus, StopCode, TaskRecord, TaskStatus};
use crate::model::taskdef::TaskDefinition;
use crate::store::{Change, Condition, Revision, Store, StoreError, Write};

/// How often every service is reconciled even without a change.
pub const RESYNC: Duration = Duration::from_secs(10);

/// The most tasks one pass starts, in as many commits as the store
/// needs; the rest go in the next pass, at once.
const MAX_STARTS_PER_PASS: usize = 1000;

/// What a pass leaves of the store's limit on one commit
/// ([`Store::max_ops`]) for the service record's write and the guards
/// added after its starts and stops.
const PASS_RESERVE: usize = 4;

/// The most changes taken from the feed between two rounds of passes.
const MAX_CHANGES_AT_ONCE: usize = 10_000;

/// The least time between two passes over a service that changes
/// (unless the first has more to do).
const COALESCE: Duration = Duration::from_millis(100);

/// How long a service whose task could not be placed waits before trying
/// again (a stopping task frees resources sooner, and is a change too).
const PLACE_RETRY: f64 = 5.0;

/// When the controller's periodic work is next due.
struct Clock {
    /// Every service looked at again.
    resync: Instant,
    /// The scaler's next pass.
    scale: Instant,
}

/// Random ids for reconcile.
pub struct RandomIds;

impl Ids for RandomIds {
    fn event_id(&mut self) -> String {
        let h = crate::model::new_id();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn deployment_id(&mut self) -> String {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        format!(
            "ecs-svc/{:019}",
            u64::from_le_bytes(b) % 10_000_000_000_000_000_000
        )
    }
}

/// Starts the controller thread; it returns when `shutdown` is cancelled.
/// Join it before stopping the workers, so that tasks stopped by a
/// shutdown are not replaced.
pub fn spawn(
    store: Arc<dyn Store>,
    node: String,
    lease: NodeLease,
    scale_in_window: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    crate::threads::spawn("skiff-scheduler", move || async move {
        let mut c = Controller::new(store.clone(), node, lease);
        c.scaler = Some(super::autoscale::Scaler::new(store, scale_in_window));
        c.run(shutdown).await
    })
}

/// The controller's state: caches only; everything it decides on is read
/// from the store.
pub struct Controller {
    store: Arc<dyn Store>,
    /// This node's side of the election: only the leader reconciles, and
    /// its writes are fenced.
    leadership: Leadership,
    /// The services' tasks, kept from the change feed.
    view: super::view::TaskView,
    /// Parsed task definitions (they never change once registered).
    definitions: HashMap<(String, u32), TaskDefinition>,
    /// Revisions of the controller's own commits, whose changes it skips.
    own: VecDeque<Revision>,
    /// Service auto scaling, run every [`super::autoscale::EVERY`] while
    /// this node leads.
    scaler: Option<super::autoscale::Scaler>,
    /// The DAEMON services seen (service keys): looked at again whenever
    /// a node comes, goes or changes.
    daemons: BTreeSet<String>,
    /// Services whose reconcile failed, and how long each waits.
    backoff: super::backoff::Backoff,
}

impl Controller {
    /// A controller over `store` for node `node`, whose records live
    /// under `lease`.
    pub fn new(store: Arc<dyn Store>, node: String, lease: NodeLease) -> Controller {
        Controller {
            store,
            leadership: Leadership::new(node, lease),
            view: Default::default(),
            definitions: HashMap::new(),
            own: VecDeque::new(),
            scaler: None,
            daemons: BTreeSet::new(),
            backoff: Default::default(),
        }
    }

    fn all_services(&self) -> BTreeSet<String> {
        match self.store.list("services/", None, usize::MAX) {
            Ok(rs) => rs.into_iter().map(|r| r.key).collect(),
            Err(e) => {
                tracing::error!("the scheduler cannot list services: {e}");
                BTreeSet::new()
            }
        }
    }

    fn on_change(&mut self, c: &Change, dirty: &mut BTreeSet<String>) {
        // The view takes every change (it knows the writes it holds);
        // the controller's own do not wake a service.
        let owner = self.view.changed(&c.key, c.revision, c.deleted);
        if self.own.contains(&c.revision) {
            return;
        }
        if c.key.starts_with(service::PREFIX) {
            dirty.insert(c.key.clone());
        } else if let Some(owner) = owner {
            dirty.insert(owner);
        }
    }

    /// Whether the node load report at `key` holds requests for a task to
    /// start.
    fn requests_held(&self, key: &str) -> bool {
        self.store
            .get(key)
            .ok()
            .flatten()
            .and_then(|r| serde_json::from_slice::<crate::model::scaling::NodeLoad>(&r.value).ok())
            .is_some_and(|l| l.services.values().any(|s| s.waiting > 0))
    }

    /// Campaigns, and once this node leads: every service is looked at,
    /// and lost nodes' tasks are recorded STOPPED.
    fn lead(&mut self, dirty: &mut BTreeSet<String>) {
        let was = self.leadership.leading();
        let leads = match self.leadership.campaign(self.store.as_ref()) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("the scheduler cannot campaign for the lead: {e}");
                false
            }
        };
        if leads && !was {
            // Another leader may have placed and stopped tasks meanwhile.
            self.view.clear();
            dirty.extend(self.all_services());
            self.sweep_lost(dirty);
        }
    }

    /// Reconciles on every change until `shutdown`, while this node leads;
    /// otherwise waits for the lead to be free.
    pub async fn run(&mut self, shutdown: CancellationToken) {
        // Watch from the revision before the first listing, so that no
        // change falls between.
        let mut watch = self.store.watch("", self.revision());
        let mut dirty = BTreeSet::new();
        self.lead(&mut dirty);
        let mut timers: HashMap<String, Instant> = HashMap::new();
        // When each service was last synced, and those to sync again at
        // once.
        let mut recent: HashMap<String, Instant> = HashMap::new();
        let mut urgent: BTreeSet<String> = BTreeSet::new();
        let mut clock = Clock {
            resync: Instant::now() + RESYNC,
            scale: Instant::now() + super::autoscale::EVERY,
        };
        loop {
            if !self.leadership.leading() {
                dirty.clear();
                timers.clear();
                urgent.clear();
            }
            let now = Instant::now();
            recent.retain(|_, at| now < *at + COALESCE);
            while let Some(key) = dirty.pop_first() {
                // Changes to a service synced a moment ago wait out the
                // rest of the moment, together: 10,000 tasks reporting
                // RUNNING make a few passes, not thousands. A plan that
                // has more to do goes on at once.
                if let Some(at) = recent.get(&key) {
                    if !urgent.contains(&key) {
                        let due = *at + COALESCE;
                        let t = timers.entry(key).or_insert(due);
                        *t = (*t).min(due);
                        continue;
                    }
                }
                urgent.remove(&key);
                timers.remove(&key);
                let after = self.sync(&key);
                recent.insert(key.clone(), Instant::now());
                if let Some(after) = after {
                    if after <= 0.0 {
                        urgent.insert(key.clone());
                    }
                    let after = Duration::from_secs_f64(after.clamp(0.0, 3600.0));
                    timers.insert(key, Instant::now() + after);
                }
            }
            let next = timers
                .values()
                .copied()
                .min()
                .unwrap_or(clock.resync)
                .min(clock.resync)
                .min(clock.scale);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                change = watch.next() => {
                    // Every change at hand is taken before the next pass:
                    // one pass a change fell behind the feed.
                    let mut change = Some(change);
                    let mut taken = 0;
                    while let Some(c) = change.take() {
                        match c {
                            Ok(c) => self.changed(&c, &mut dirty, &mut clock),
                            Err(e) => {
                                watch = self.rewatch(e, &mut dirty);
                                break;
                            }
                        }
                        taken += 1;
                        if taken < MAX_CHANGES_AT_ONCE {
                            change = watch.ready().await;
                        }
                    }
                }
                _ = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    self.tick(now, &mut dirty, &mut clock);
                    timers.retain(|k, at| {
                        if *at <= now {
                            dirty.insert(k.clone());
                            false
                        } else {
                            true
                        }
                    });
                }
            }
        }
    }

    /// The watch failed (compacted past, or the store failed): a new one
    /// from now, and every service looked at again from what is stored.
    fn rewatch(&mut self, e: StoreError, dirty: &mut BTreeSet<String>) -> crate::store::Watch {
        if !matches!(e, StoreError::Compacted(_)) {
            tracing::error!("the scheduler's watch of the store failed: {e}");
        }
        let watch = self.store.watch("", self.revision());
        self.view.clear();
        if self.leadership.leading() {
            dirty.extend(self.all_services());
        }
        watch
    }

    /// A change in the store: the leader key (campaign again), a node's
    /// load holding requests (scale now), or a record a service depends on
    /// (mark it dirty; nodes also wake DAEMON services and the sweep of
    /// lost nodes, a deleted task definition the sweep of deletions).
    fn changed(&mut self, c: &Change, dirty: &mut BTreeSet<String>, clock: &mut Clock) {
        if c.key == LEADER_KEY {
            if Some(c.revision) != self.leadership.revision() {
                let _ = self.leadership.check(self.store.as_ref());
                self.lead(dirty);
            }
            return;
        }
        if !self.leadership.leading() {
            return;
        }
        // A node holds requests for a service with no task: scale now, not
        // at the next tick.
        if c.key.starts_with(crate::model::scaling::LOAD) && self.requests_held(&c.key) {
            clock.scale = Instant::now();
        }
        self.on_change(c, dirty);
        // A node record changed or went (its lease lapsed).
        let node_record = c
            .key
            .strip_prefix("nodes/")
            .is_some_and(|rest| !rest.contains('/'));
        if node_record {
            self.sweep_lost(dirty);
        }
        // DAEMON services follow the nodes: their leases, statuses and
        // attributes.
        if node_record || c.key.starts_with("instances/") {
            dirty.extend(self.daemons.iter().cloned());
        }
        // A revision newly deleted (not the sweep's own removal of a mark).
        if c.key.starts_with(definitions::DELETING) && !c.deleted {
            self.sweep_deleted();
        }
    }

    /// The clock's work: the scaler's pass, and the periodic resync (every
    /// service not backing off, the sweeps; or a campaign, when not
    /// leading).
    fn tick(&mut self, now: Instant, dirty: &mut BTreeSet<String>, clock: &mut Clock) {
        if now >= clock.scale {
            clock.scale = now + super::autoscale::EVERY;
            if let (Some(scaler), Some(fence)) = (self.scaler.as_mut(), self.leadership.fence()) {
                if let Err(e) = scaler.pass(&fence) {
                    tracing::warn!("the scaler's pass failed: {e}");
                }
            }
        }
        if now < clock.resync {
            return;
        }
        clock.resync = now + RESYNC;
        if self.leadership.leading() {
            let _ = self.leadership.check(self.store.as_ref());
        }
        if self.leadership.leading() {
            // A service backing off waits for its timer (or a change of
            // its own), not the resync.
            let services = self.all_services();
            dirty.extend(services.into_iter().filter(|k| !self.backoff.failing(k)));
            self.sweep_lost(dirty);
            self.sweep_deleted();
        } else {
            self.lead(dirty);
        }
    }

    /// Records STOPPED the tasks of nodes whose lease lapsed (they are
    /// not running anywhere the store can tell; their node, if it comes
    /// back, stops them), and marks their services dirty, so that they
    /// are replaced elsewhere. Fenced: a deposed leader writes nothing.
    fn sweep_lost(&mut self, dirty: &mut BTreeSet<String>) {
        let lost: Vec<String> = match capacity::Fleet::read(self.store.as_ref()) {
            // Never this node: while it runs, what it runs is its own to
            // report (and if its lease lapsed, it does not lead either).
            Ok(f) => f
                .members
                .into_iter()
                .filter(|m| !m.connected && m.id != self.leadership.node())
                .map(|m| m.id)
                .collect(),
            Err(e) => {
                tracing::warn!("the scheduler cannot read the nodes: {e}");
                return;
            }
        };
        if lost.is_empty() {
            return;
        }
        let records = match self.store.list("tasks/", None, usize::MAX) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("the scheduler cannot list tasks: {e}");
                return;
            }
        };
        let now = crate::model::now();
        for r in records {
            let Some(mut t) = crate::model::task::TaskRecord::decode(&r.value) else {
                continue;
            };
            if t.last_status == TaskStatus::Stopped || !lost.contains(&t.node) {
                continue;
            }
            let Some(fence) = self.leadership.fence() else {
                return;
            };
            let reason = format!(
                "Task stopped because its container instance {} was lost (its node stopped renewing its lease)",
                t.node
            );
            crate::model::task::record(
                &mut t,
                &crate::model::task::Event::Stopped {
                    code: StopCode::TerminationNotice,
                    reason,
                },
                now,
            );
            for c in &mut t.containers {
                if c.last_status != ContainerStatus::Stopped {
                    c.last_status = ContainerStatus::Stopped;
                    c.reason = Some("its node was lost".into());
                }
            }
            match self.store.commit(
                &[Condition::At(r.key.clone(), r.mod_revision), fence],
                &[Write::Put(r.key.clone(), t.encode())],
            ) {
                Ok(rev) => {
                    self.remember(rev);
                    tracing::warn!(
                        "task {} of node {} recorded STOPPED: the node was lost",
                        t.id,
                        t.node
                    );
                    if let Some(svc) = &t.service {
                        dirty.insert(service::key(&t.cluster, svc));
                    }
                }
                Err(StoreError::Conflict) => {
                    if !self.leadership.check(self.store.as_ref()).unwrap_or(false) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("the scheduler cannot record task {} stopped: {e}", t.id);
                    return;
                }
            }
        }
    }

    /// Deletes for good the task definitions DeleteTaskDefinitions
    /// marked, once no task that is not STOPPED and no live deployment of
    /// a service uses them (until then they stay DELETE_IN_PROGRESS, as in
    /// ECS). Fenced.
    fn sweep_deleted(&mut self) {
        let marked = match self.store.list(definitions::DELETING, None, usize::MAX) {
            Ok(m) if m.is_empty() => return,
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("the scheduler cannot list deleted task definitions: {e}");
                return;
            }
        };
        let used = match self.definitions_in_use() {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!("the scheduler cannot tell which task definitions are used: {e}");
                return;
            }
        };
        for m in marked {
            let Some((family, revision)) = definitions::parse_deleting_key(&m.key) else {
                continue;
            };
            if used.contains(&(family.clone(), revision)) {
                continue;
            }
            let Some(fence) = self.leadership.fence() else {
                return;
            };
            let mut conditions = vec![Condition::At(m.key.clone(), m.mod_revision), fence];
            let mut writes = vec![
                Write::Delete(definitions::key(&family, revision)),
                Write::Delete(m.key.clone()),
                Write::Delete(crate::model::tags::key(
                    "task-definition",
                    &format!("{family}:{revision}"),
                )),
            ];
            // The family counts revisions deleted for good: when all are,
            // it is no longer listed.
            let fk = definitions::family_key(&family);
            match self.store.get(&fk) {
                Ok(Some(r)) => {
                    let mut f = FamilyRecord::decode(&r.value).unwrap_or_default();
                    f.deleted += 1;
                    conditions.push(Condition::At(fk.clone(), r.mod_revision));
                    writes.push(Write::Put(fk, f.encode()));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(
                        "the scheduler cannot read task definition family {family}: {e}"
                    );
                    return;
                }
            }
            match self.store.commit(&conditions, &writes) {
                Ok(rev) => {
                    self.remember(rev);
                    self.definitions.remove(&(family.clone(), revision));
                    tracing::info!(
                        "task definition {family}:{revision} deleted: no task or deployment uses it"
                    );
                }
                // Registered or deleted again meanwhile: the next pass
                // looks again.
                Err(StoreError::Conflict) => {
                    if !self.leadership.check(self.store.as_ref()).unwrap_or(false) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "the scheduler cannot delete task definition {family}:{revision}: {e}"
                    );
                    return;
                }
            }
        }
    }

    /// The task definitions (family, revision) that tasks not STOPPED and
    /// the live deployments of services not INACTIVE use.
    fn definitions_in_use(&self) -> Result<std::collections::HashSet<(String, u32)>, StoreError> {
        let mut used = std::collections::HashSet::new();
        for r in self.store.list("tasks/", None, usize::MAX)? {
            if let Some(t) = crate::model::task::TaskRecord::decode(&r.value) {
                if t.last_status != TaskStatus::Stopped {
                    used.insert((t.family, t.revision));
                }
            }
        }
        for r in self.store.list("services/", None, usize::MAX)? {
            let Ok(s) = serde_json::from_slice::<ServiceRecord>(&r.value) else {
                continue;
            };
            if s.status == ServiceStatus::Inactive {
                continue;
            }
            for d in &s.deployments {
                if d.status != DeploymentStatus::Inactive {
                    used.insert((d.family.clone(), d.revision));
                }
            }
            used.insert((s.family, s.revision));
        }
        Ok(used)
    }

    fn remember(&mut self, revision: Revision) {
        self.own.push_back(revision);
        if self.own.len() > 64 {
            self.own.pop_front();
        }
    }

    fn revision(&self) -> Revision {
        self.store.revision().unwrap_or_else(|e| {
            tracing::error!("the scheduler cannot read the store's revision: {e}");
            0
        })
    }

    /// The domains (and HTTPS redirect) an ACTIVE service should claim
    /// when they are not what it claims: those of the task definition it
    /// runs, so that after a rollback (the circuit breaker's) it answers on
    /// the names of the one it returned to, as after StopServiceDeployment.
    /// A name another service claimed meanwhile stays with that service.
    fn domains(&mut self, s: &ServiceRecord) -> Option<(BTreeSet<String>, bool)> {
        if s.status != ServiceStatus::Active {
            return None;
        }
        let td = self.definition(&s.family, s.revision).ok()?;
        let (mut domains, redirect) = (td.domains(), td.https_redirect());
        if (&domains, redirect) == (&s.domains, s.https_redirect) {
            return None;
        }
        domains.retain(
            |d| match self.store.get(&crate::model::domain::claim_key(d)) {
                Ok(None) => true,
                Ok(Some(r)) => serde_json::from_slice::<crate::model::domain::Claim>(&r.value)
                    .is_ok_and(|c| c.cluster == s.cluster && c.service == s.name),
                Err(_) => false,
            },
        );
        ((&domains, redirect) != (&s.domains, s.https_redirect)).then_some((domains, redirect))
    }

    fn definition(&mut self, family: &str, revision: u32) -> Result<TaskDefinition, String> {
        let k = (family.to_string(), revision);
        if let Some(td) = self.definitions.get(&k) {
            return Ok(td.clone());
        }
        let (record, _) = crate::store::records::read::<DefinitionRecord>(
            self.store.as_ref(),
            &definitions::key(family, revision),
        )
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("task definition {family}:{revision} does not exist"))?;
        let td = record.definition().map_err(|e| e.to_string())?;
        self.definitions.insert(k, td.clone());
        Ok(td)
    }

    /// Reconciles one service and carries out the plan. Returns when to
    /// run again, if the plan asks.
    pub fn sync(&mut self, key: &str) -> Option<f64> {
        for _ in 0..16 {
            match self.attempt(key) {
                Ok(requeue) => {
                    self.backoff.succeeded(key);
                    return requeue;
                }
                Err(StoreError::Conflict) => {
                    // What the view holds of it may be behind: read anew.
                    self.view.forget(key);
                    // Deposed: the new leader reconciles.
                    if !self.leadership.check(self.store.as_ref()).unwrap_or(false) {
                        return None;
                    }
                }
                Err(e) => {
                    let after = self.backoff.failed(key);
                    tracing::warn!(
                        "the scheduler could not reconcile {key}: {e}; retrying in {after:?}"
                    );
                    return Some(after.as_secs_f64());
                }
            }
        }
        Some(0.05)
    }

    /// One reconcile of the service at `key`: compare, place what is to
    /// start, and commit it all in one transaction. Returns when to run
    /// again, if the plan asks.
    fn attempt(&mut self, key: &str) -> Result<Option<f64>, StoreError> {
        let Some(rec) = self.store.get(key)? else {
            return Ok(None);
        };
        let Ok(svc) = serde_json::from_slice::<ServiceRecord>(&rec.value) else {
            tracing::error!("the service record {key} cannot be read; skipping it");
            return Ok(None);
        };
        if svc.status == ServiceStatus::Inactive {
            return Ok(None);
        }
        let tasks = self
            .view
            .tasks_of(self.store.as_ref(), key, &svc.cluster, &svc.name)?;
        let (observed, revisions): (Vec<TaskRecord>, Vec<Revision>) = tasks.into_iter().unzip();
        let now = crate::model::now();
        let mut placer = Placer::read(self.store.as_ref())?;
        let member_of: Vec<Expr> = svc
            .member_of
            .iter()
            .filter_map(|e| super::expr::parse(e).ok())
            .collect();
        let mut plan = if svc.daemon {
            self.daemons.insert(key.to_string());
            let eligible: Vec<String> = placer
                .fleet()
                .members
                .iter()
                .filter(|m| {
                    m.accepts() && member_of.iter().all(|e| e.matches(&m.id, &m.attributes))
                })
                .map(|m| m.id.clone())
                .collect();
            reconcile_daemon(&svc, &observed, &eligible, now, &mut RandomIds)
        } else {
            let draining: Vec<String> = placer
                .fleet()
                .members
                .iter()
                .filter(|m| m.status == crate::model::node::InstanceStatus::Draining)
                .map(|m| m.id.clone())
                .collect();
            reconcile_draining(&svc, &observed, &draining, now, &mut RandomIds)
        };
        // The counts DescribeServices shows change as the tasks do: a
        // pass records them.
        plan.service.observe(&observed);
        let domains = self.domains(&plan.service);
        if !plan.acts(&svc) && domains.is_none() {
            return Ok(plan.requeue);
        }
        let Some(fence) = self.leadership.fence() else {
            return Ok(None);
        };
        let mut s = plan.service.clone();
        let mut requeue = plan.requeue;
        placer.guard(Condition::At(key.to_string(), rec.mod_revision));
        placer.guard(fence);
        // The claims move with the domains; a name claimed by another
        // service since it was read leaves them as they were, and the
        // next pass looks again.
        if let Some((domains, redirect)) = domains {
            s.domains = domains;
            s.https_redirect = redirect;
            match crate::store::records::claims(self.store.as_ref(), &svc.domains, &s) {
                Ok((conditions, writes)) => {
                    conditions.into_iter().for_each(|c| placer.guard(c));
                    writes.into_iter().for_each(|w| placer.write(w));
                }
                Err(_) => {
                    s.domains = svc.domains.clone();
                    s.https_redirect = svc.https_redirect;
                    requeue = Some(PLACE_RETRY);
                }
            }
        }
        // What spread counts: the service's live tasks.
        placer.group(
            observed
                .iter()
                .filter(|t| live(t))
                .map(|t| (t.node.as_str(), t.worker)),
        );
        let mut run = Starts {
            next: 0,
            providers: deployment_providers(&observed),
            placed: Vec::new(),
            event: None,
        };
        // One commit, or as many as the store needs for the pass's starts
        // (etcd takes 128 operations in one): each fenced, each guarded by
        // the service record as the one before left it, each whole tasks.
        let mut first = true;
        loop {
            let chunk = self.place_starts(&mut placer, &mut s, &plan, &mut run, &member_of, now);
            requeue = match (requeue, chunk.requeue) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for t in &chunk.placed {
                placer.add_task(t);
                placer.write(Write::Put(
                    service::task_index_key(&s.cluster, &s.name, &t.id),
                    Vec::new(),
                ));
            }
            if first
                && stop_tasks(
                    &mut placer,
                    &plan,
                    (&observed, &revisions),
                    self.store.max_ops(),
                )
            {
                requeue = Some(0.0);
            }
            s.observe_placed(&chunk.placed);
            placer.write(Write::Put(
                key.to_string(),
                serde_json::to_vec(&s).unwrap_or_default(),
            ));
            let revision = placer.commit(self.store.as_ref())?;
            self.remember(revision);
            for t in &chunk.placed {
                self.view.placed(key, t, revision);
            }
            let went_on = !chunk.placed.is_empty();
            run.placed.extend(chunk.placed);
            if !chunk.full {
                break;
            }
            let fence = match self.leadership.fence() {
                Some(fence) if went_on => fence,
                _ => {
                    requeue = Some(0.0);
                    break;
                }
            };
            placer.committed(revision);
            placer.guard(Condition::At(key.to_string(), revision));
            placer.guard(fence);
            first = false;
        }
        Ok(requeue)
    }

    /// Places the plan's starts from `run.next` on, as many as one commit
    /// takes, saying in the service's events what could not be placed
    /// and that the others started (one event for the pass, said again
    /// with each commit).
    fn place_starts(
        &mut self,
        placer: &mut Placer,
        s: &mut ServiceRecord,
        plan: &super::reconcile::Plan,
        run: &mut Starts,
        member_of: &[Expr],
        now: f64,
    ) -> Chunk {
        let providers = &mut run.providers;
        let mut placed: Vec<TaskRecord> = Vec::new();
        let mut requeue = None;
        // As many as the store takes in one commit (all of them on
        // SQLite; on etcd, its --max-txn-ops); then `full`, and the rest
        // go in the next commit. Past MAX_STARTS_PER_PASS, in the next
        // pass, at once.
        let budget = self.store.max_ops().unwrap_or(usize::MAX);
        let mut unplaced = false;
        let mut more = false;
        let mut full = false;
        let mut planned = 0;
        let mut next = plan.start.len();
        for (i, st) in plan.start.iter().enumerate().skip(run.next) {
            let td = match self.definition(&st.family, st.revision) {
                Ok(td) => td,
                Err(e) => {
                    let msg = format!("(service {}) was unable to start a task: {e}.", s.name);
                    if !s.said_recently(&msg, now, 60.0) {
                        s.event(RandomIds.event_id(), now, msg);
                    }
                    requeue = Some(PLACE_RETRY);
                    unplaced = true;
                    break;
                }
            };
            // A task's record, its index entry and a log stream's per
            // container (written after this loop), and a node's
            // reservations the pass had not touched.
            let task_ops = 2 + td.containers.len();
            if run.placed.len() + placed.len() >= MAX_STARTS_PER_PASS {
                more = true;
                break;
            }
            if placer.ops() + planned + task_ops + 1 + PASS_RESERVE > budget {
                (full, next) = (true, i);
                break;
            }
            planned += task_ops;
            let (cpu, memory) = (td.reserved_cpu(), td.reserved_memory());
            let mut pinned = Vec::new();
            match placer.place(&ask(st, s, member_of, &mut pinned, (cpu, memory))) {
                Ok(at) => {
                    let deployment = providers.entry(st.deployment.clone()).or_default();
                    placed.push(service_task(s, st, &td, at, deployment, now));
                }
                Err(why) => {
                    let needs =
                        format!("the task needs {cpu} CPU units and {memory} MiB on one worker");
                    let msg = match &st.node {
                        Some(node) => format!(
                            "(service {}) was unable to place a task on container instance {node}. Reason: {why} ({needs}).",
                            s.name,
                        ),
                        None => format!(
                            "(service {}) was unable to place a task because no container instance met all of its requirements. Reason: {why} ({needs}; {}).",
                            s.name,
                            placer.fleet().summary(),
                        ),
                    };
                    if !s.said_recently(&msg, now, 60.0) {
                        s.event(RandomIds.event_id(), now, msg);
                    }
                    requeue = Some(requeue.map_or(PLACE_RETRY, |r: f64| r.min(PLACE_RETRY)));
                    // A full node holds up only its own daemon task.
                    if st.node.is_some() {
                        continue;
                    }
                    unplaced = true;
                    break;
                }
            }
        }
        if more && !unplaced {
            requeue = Some(0.0);
        }
        run.next = next;
        if !placed.is_empty() {
            let n = run.placed.len() + placed.len();
            let list = service::named_tasks(
                run.placed
                    .iter()
                    .chain(&placed)
                    .map(|t| t.id.as_str())
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            if let Some(said) = run.event.take() {
                s.events.retain(|e| e.id != said);
            }
            let id = RandomIds.event_id();
            run.event = Some(id.clone());
            s.event(
                id,
                now,
                format!(
                    "(service {}) has started {n} task{}: {list}.",
                    s.name,
                    if n == 1 { "" } else { "s" },
                ),
            );
        }
        Chunk {
            placed,
            requeue,
            full,
        }
    }
}

/// A pass's starts, across the commits they take.
struct Starts {
    /// The next of the plan's starts to place.
    next: usize,
    /// Each deployment's live tasks by capacity provider.
    providers: BTreeMap<String, BTreeMap<String, u32>>,
    /// What the pass's commits so far placed.
    placed: Vec<TaskRecord>,
    /// The id of the pass's "has started" event, said again (with every
    /// task so far) with each commit.
    event: Option<String>,
}

/// What one commit of a pass places.
struct Chunk {
    placed: Vec<TaskRecord>,
    /// When to run the pass again, if it asks.
    requeue: Option<f64>,
    /// The commit is as full as the store takes, and starts are left:
    /// they go in another commit, at once.
    full: bool,
}

/// What placement is asked for the plan's start `st`: a DAEMON task goes
/// to its node (`pinned` holds the constraint), on the worker placement
/// picks; a replica where the service's strategies and constraints say.
fn ask<'a>(
    st: &super::reconcile::Start,
    s: &'a ServiceRecord,
    member_of: &'a [Expr],
    pinned: &'a mut Vec<Expr>,
    (cpu, memory): (u32, u64),
) -> capacity::PlacementAsk<'a> {
    match &st.node {
        Some(node) => {
            pinned.push(Expr::Cond(Subject::Instance, Op::Eq(node.clone())));
            capacity::PlacementAsk {
                strategies: &[],
                distinct_instance: false,
                member_of: pinned,
                cpu,
                memory,
            }
        }
        None => capacity::PlacementAsk {
            strategies: &s.strategy,
            distinct_instance: s.distinct_instance,
            member_of,
            cpu,
            memory,
        },
    }
}

/// A task of service `s` placed at `at` for the plan's start `st` of a
/// deployment (`providers`: that deployment's live tasks by capacity
/// provider), running the digests the deployment pinned.
fn service_task(
    s: &ServiceRecord,
    st: &super::reconcile::Start,
    td: &TaskDefinition,
    at: super::placer::Placement,
    providers: &mut BTreeMap<String, u32>,
    now: f64,
) -> TaskRecord {
    let mut t = TaskRecord::placed(
        td,
        st.revision,
        &s.cluster,
        &at.node,
        at.worker,
        now,
        &mut crate::model::new_id,
    );
    t.zone = at.zone;
    t.group = service::group(&s.name);
    t.service = Some(s.name.clone());
    t.started_by = Some(st.deployment.clone());
    t.launch_type = s.launch_type.clone();
    t.capacity_provider = crate::model::provider::pick(&s.capacity_provider_strategy, providers);
    if let Some(d) = s.deployments.iter().find(|d| d.id == st.deployment) {
        for c in &mut t.containers {
            c.image_digest = d.image_digests.get(&c.name).cloned();
        }
    }
    t
}

/// Each deployment's live tasks by capacity provider: a new task goes to
/// the provider its strategy is furthest behind on.
fn deployment_providers(tasks: &[TaskRecord]) -> BTreeMap<String, BTreeMap<String, u32>> {
    let mut providers: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for t in tasks {
        if let (Some(d), Some(p)) = (&t.started_by, &t.capacity_provider) {
            if live(t) {
                *providers
                    .entry(d.clone())
                    .or_default()
                    .entry(p.clone())
                    .or_default() += 1;
            }
        }
    }
    providers
}

/// Writes desiredStatus STOPPED to the tasks the plan stops, within
/// what the store takes in one commit (`max_ops`; each stop is a write
/// guarded by the revision it was read at); whether some were left for
/// the next pass. `tasks` are the service's, with the revisions they
/// were read at.
fn stop_tasks(
    placer: &mut Placer,
    plan: &super::reconcile::Plan,
    (tasks, revisions): (&[TaskRecord], &[Revision]),
    max_ops: Option<usize>,
) -> bool {
    if plan.stop.is_empty() {
        return false;
    }
    let room = max_ops.map_or(usize::MAX, |m| {
        m.saturating_sub(placer.ops() + PASS_RESERVE)
    });
    let by_id: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    for st in plan.stop.iter().take(room) {
        let Some(&i) = by_id.get(st.task.as_str()) else {
            continue;
        };
        let (mut t, rev) = (tasks[i].clone(), &revisions[i]);
        t.desired_status = DesiredStatus::Stopped;
        if t.stop_code.is_none() {
            t.stop_code = Some(StopCode::ServiceSchedulerInitiated);
            t.stopped_reason = Some(st.reason.clone());
        }
        t.version += 1;
        let tk = task::key(&t.cluster, &t.id);
        placer.guard(Condition::At(tk.clone(), *rev));
        placer.write(Write::Put(tk, t.encode()));
    }
    plan.stop.len() > room
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::definitions::{self, DefinitionRecord, DefinitionStatus};
    use crate::scheduler::capacity::{register, tests::lease, tests::node};
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    /// A store with a node of room for `tasks` tasks of 16 MiB, a
    /// task definition and a service of `tasks` tasks; its key and the
    /// node's lease.
    fn service_of(inner: &dyn Store, tasks: u32) -> (String, crate::store::LeaseId) {
        let l = lease(inner);
        register(inner, "n1", &node(&[(1024, 16 * tasks as u64)]), l).unwrap();
        let td = DefinitionRecord {
            family: "web".into(),
            revision: 1,
            status: DefinitionStatus::Active,
            registered_at: Some(0.0),
            deregistered_at: None,
            document: serde_json::json!({"family": "web", "containerDefinitions": [
                {"name": "web", "image": "web.wasm", "memory": 16}]}),
            digests: Default::default(),
        };
        let mut svc = crate::scheduler::reconcile::tests::service(1, Default::default());
        svc.desired_count = tasks;
        let key = service::key("default", "web");
        inner
            .commit(
                &[],
                &[
                    Write::Put(definitions::key("web", 1), td.encode()),
                    Write::Put(key.clone(), serde_json::to_vec(&svc).unwrap()),
                ],
            )
            .unwrap();
        (key, l)
    }

    /// Syncs the service at `key` until a pass asks for no next one at
    /// once; how many passes that took.
    fn passes_until_placed(c: &mut Controller, key: &str) -> usize {
        let mut passes = 1;
        while c.sync(key) == Some(0.0) {
            passes += 1;
            assert!(passes < 100, "the passes never end");
        }
        passes
    }

    #[test]
    fn a_pass_places_as_many_tasks_as_one_commit_of_the_store_takes() {
        // No limit (SQLite): passes of MAX_STARTS_PER_PASS, each asking
        // for the next at once.
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let n = 2 * MAX_STARTS_PER_PASS + 50;
        let (key, l) = service_of(store.as_ref(), n as u32);
        let mut c = Controller::new(store.clone(), "n1".into(), Arc::new(l.into()));
        c.lead(&mut BTreeSet::new());
        assert!(c.leadership.leading());
        let passes = passes_until_placed(&mut c, &key);
        let placed = crate::store::records::tasks(store.as_ref(), task::PREFIX).unwrap();
        assert_eq!(placed.len(), n);
        assert_eq!(passes, 3);

        // A store that takes 40 operations a commit (etcd's limit is
        // 128): one pass places them all, in as many commits as that
        // takes, each within the limit (a larger one is refused).
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let (key, l) = service_of(inner.as_ref(), 300);
        let commits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = commits.clone();
        let store = Arc::new(
            crate::store::hooked::Hooked::new(inner.clone())
                .max_ops(40)
                .before_commit(move |_, _| {
                    counted.fetch_add(1, SeqCst);
                    Ok(())
                }),
        );
        let mut c = Controller::new(store, "n1".into(), Arc::new(l.into()));
        c.lead(&mut BTreeSet::new());
        assert!(c.leadership.leading());
        commits.store(0, SeqCst);
        let passes = passes_until_placed(&mut c, &key);
        assert!(!c.backoff.failing(&key), "a commit was refused");
        let placed = crate::store::records::tasks(inner.as_ref(), task::PREFIX).unwrap();
        assert_eq!(placed.len(), 300);
        assert_eq!(passes, 1);
        let commits = commits.load(SeqCst);
        assert!(
            commits >= 300 / 20,
            "{commits} commits of at most 40 operations"
        );
        // The pass says once that it started them all, and records them.
        let (svc, _) = crate::store::records::read::<ServiceRecord>(inner.as_ref(), &key)
            .unwrap()
            .unwrap();
        let started: Vec<&str> = svc
            .events
            .iter()
            .map(|e| e.message.as_str())
            .filter(|m| m.contains("has started"))
            .collect();
        assert_eq!(started.len(), 1, "{started:?}");
        assert!(started[0].contains("has started 300 tasks"), "{started:?}");
        assert_eq!(svc.observed.pending, 300);
    }

    #[test]
    fn a_pass_rereads_only_the_tasks_that_changed_and_records_the_counts() {
        use std::sync::atomic::AtomicUsize;
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let (key, l) = service_of(inner.as_ref(), 50);
        let reads = Arc::new(AtomicUsize::new(0));
        let r = reads.clone();
        let store = crate::store::hooked::Hooked::new(inner.clone()).before_get(move |k| {
            if k.starts_with(task::PREFIX) {
                r.fetch_add(1, SeqCst);
            }
        });
        let mut c = Controller::new(Arc::new(store), "n1".into(), Arc::new(l.into()));
        c.lead(&mut BTreeSet::new());
        passes_until_placed(&mut c, &key);
        let observed = |want: service::Counts| {
            let (svc, _) = crate::store::records::read::<ServiceRecord>(inner.as_ref(), &key)
                .unwrap()
                .unwrap();
            assert_eq!(svc.observed, want);
            assert_eq!(svc.deployments[0].observed, want);
        };
        observed(service::Counts {
            running: 0,
            pending: 50,
        });

        // Nothing changed: a pass reads no task.
        reads.store(0, SeqCst);
        c.sync(&key);
        assert_eq!(reads.load(SeqCst), 0);

        // Two tasks report RUNNING, as the ledger does, and the feed
        // brings the changes: the service is woken, and its next pass
        // reads those two.
        let mut dirty = BTreeSet::new();
        for (mut t, rev) in crate::store::records::tasks(inner.as_ref(), task::PREFIX)
            .unwrap()
            .into_iter()
            .take(2)
        {
            t.last_status = TaskStatus::Running;
            let k = task::key(&t.cluster, &t.id);
            let revision = inner
                .commit(
                    &[Condition::At(k.clone(), rev)],
                    &[Write::Put(k.clone(), t.encode())],
                )
                .unwrap();
            c.on_change(
                &Change {
                    revision,
                    key: k,
                    deleted: false,
                },
                &mut dirty,
            );
        }
        assert_eq!(dirty, BTreeSet::from([key.clone()]));
        reads.store(0, SeqCst);
        c.sync(&key);
        assert_eq!(reads.load(SeqCst), 2);
        observed(service::Counts {
            running: 2,
            pending: 48,
        });
    }

    #[test]
    fn a_service_whose_reconcile_fails_backs_off_and_a_success_resets_it() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        // Commits fail as an unreachable etcd's would, while `down`.
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        let store = crate::store::hooked::Hooked::new(inner.clone()).before_commit(move |_, _| {
            match d.load(SeqCst) {
                true => Err(StoreError::Io("etcd: connection refused".into())),
                false => Ok(()),
            }
        });
        let (key, l) = service_of(inner.as_ref(), 1);
        let mut c = Controller::new(Arc::new(store), "n1".into(), Arc::new(l.into()));
        c.lead(&mut BTreeSet::new());
        assert!(c.leadership.leading());

        down.store(true, SeqCst);
        let waits: Vec<Option<f64>> = (0..5).map(|_| c.sync(&key)).collect();
        assert_eq!(
            waits,
            [Some(1.0), Some(2.0), Some(4.0), Some(8.0), Some(16.0)]
        );
        assert!(c.backoff.failing(&key));
        // The store is back: the task is placed and the count starts over.
        down.store(false, SeqCst);
        c.sync(&key);
        assert!(!c.backoff.failing(&key));
        let placed = crate::store::records::tasks(inner.as_ref(), task::PREFIX).unwrap();
        assert_eq!(placed.len(), 1);
    }
}
