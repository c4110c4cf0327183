//! ECS's `dependsOn` as a state machine over one task's containers: which
//! container starts next, which can never start and why. Pure: the task's
//! supervision loop tells it what happened (a container started, failed to
//! be set up, exited, passed its health check) and asks what to do next.
//!
//! A container waits until each of its dependencies meets its condition:
//! START (it started), COMPLETE (it exited), SUCCESS (it exited 0) or
//! HEALTHY (its health check passed once). A dependency that never started,
//! exited non-zero under SUCCESS or stopped before it was HEALTHY makes the
//! container impossible to start.

use crate::model::taskdef::{ContainerDefinition, DependencyCondition};

/// Where a container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Its dependencies are not met yet.
    Waiting,
    /// It started (and has not exited).
    Running,
    /// It exited, with its code when it had one.
    Exited(Option<i32>),
    /// It never will start.
    NeverStarted,
}

/// What the loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Start container `.0` (it is counted as running from now on).
    Start(usize),
    /// Container `.0` can never start, and why.
    Refuse(usize, String),
}

/// Whether a waiting container may start.
enum Readiness {
    Ready,
    Blocked,
    Impossible(String),
}

/// The containers' states and what their dependencies wait for.
pub(crate) struct Dependencies {
    /// Per container: (dependency index or its unknown name, condition).
    wants: Vec<Vec<(Result<usize, String>, DependencyCondition)>>,
    names: Vec<String>,
    states: Vec<State>,
    healthy: Vec<bool>,
    /// The next container a pass looks at, and whether the pass changed
    /// anything (then another pass follows).
    cursor: usize,
    progressed: bool,
}

impl Dependencies {
    /// Every container waiting.
    pub(crate) fn new(containers: &[ContainerDefinition]) -> Dependencies {
        let index_of = |name: &str| {
            containers
                .iter()
                .position(|c| c.name == name)
                .ok_or_else(|| name.to_string())
        };
        Dependencies {
            wants: containers
                .iter()
                .map(|c| {
                    c.depends_on
                        .iter()
                        .map(|d| (index_of(&d.container), d.condition))
                        .collect()
                })
                .collect(),
            names: containers.iter().map(|c| c.name.clone()).collect(),
            states: vec![State::Waiting; containers.len()],
            healthy: vec![false; containers.len()],
            cursor: 0,
            progressed: false,
        }
    }

    /// The next container to start or to give up on, marked running or
    /// never started; `None` when every waiting one waits for something
    /// still to happen. Containers are taken in order, pass after pass,
    /// as long as a pass changed something.
    pub(crate) fn next(&mut self) -> Option<Step> {
        loop {
            while self.cursor < self.states.len() {
                let i = self.cursor;
                self.cursor += 1;
                if self.states[i] != State::Waiting {
                    continue;
                }
                match self.readiness(i) {
                    Readiness::Blocked => {}
                    Readiness::Impossible(why) => {
                        self.states[i] = State::NeverStarted;
                        self.progressed = true;
                        return Some(Step::Refuse(i, why));
                    }
                    Readiness::Ready => {
                        self.states[i] = State::Running;
                        self.progressed = true;
                        return Some(Step::Start(i));
                    }
                }
            }
            self.cursor = 0;
            if !std::mem::take(&mut self.progressed) {
                return None;
            }
        }
    }

    /// Container `i`, given [`Step::Start`], could not be set up.
    pub(crate) fn failed_to_start(&mut self, i: usize) {
        self.states[i] = State::NeverStarted;
    }

    /// Container `i` exited (with its code, when it had one).
    pub(crate) fn exited(&mut self, i: usize, code: Option<i32>) {
        self.states[i] = State::Exited(code);
    }

    /// Container `i`'s health check passed (once is enough).
    pub(crate) fn healthy(&mut self, i: usize) {
        self.healthy[i] = true;
    }

    /// Whether any container runs.
    pub(crate) fn any_running(&self) -> bool {
        self.states.contains(&State::Running)
    }

    /// Each container's state.
    pub(crate) fn states(&self) -> &[State] {
        &self.states
    }

    fn readiness(&self, i: usize) -> Readiness {
        for (dependency, condition) in &self.wants[i] {
            let j = match dependency {
                Ok(j) => *j,
                Err(name) => return Readiness::Impossible(format!("unknown dependency {name}")),
            };
            let name = &self.names[j];
            let r = match (condition, self.states[j]) {
                (_, State::NeverStarted) => {
                    Readiness::Impossible(format!("dependency {name} never started"))
                }
                (DependencyCondition::Start, State::Running | State::Exited(_)) => Readiness::Ready,
                (DependencyCondition::Complete, State::Exited(_)) => Readiness::Ready,
                (DependencyCondition::Success, State::Exited(Some(0))) => Readiness::Ready,
                (DependencyCondition::Success, State::Exited(code)) => {
                    Readiness::Impossible(match code {
                        Some(c) => {
                            format!("dependency {name} exited with code {c}; SUCCESS needs 0")
                        }
                        None => format!(
                            "dependency {name} stopped without exiting; SUCCESS needs exit code 0"
                        ),
                    })
                }
                (DependencyCondition::Healthy, _) if self.healthy[j] => Readiness::Ready,
                (DependencyCondition::Healthy, State::Exited(_)) => Readiness::Impossible(format!(
                    "dependency {name} stopped before it was HEALTHY"
                )),
                _ => Readiness::Blocked,
            };
            if !matches!(r, Readiness::Ready) {
                return r;
            }
        }
        Readiness::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::taskdef::TaskDefinition;

    /// The containers of a task definition whose containers are `specs`:
    /// (name, [(dependency, condition)]); the first is essential, and
    /// each has a health check.
    fn containers(specs: &[(&str, &[(&str, &str)])]) -> Vec<ContainerDefinition> {
        let defs: Vec<serde_json::Value> = specs
            .iter()
            .enumerate()
            .map(|(i, (name, deps))| {
                let deps: Vec<serde_json::Value> = deps
                    .iter()
                    .map(|(d, c)| serde_json::json!({"containerName": d, "condition": c}))
                    .collect();
                serde_json::json!({"name": name, "image": "x.wasm", "memory": 16,
                                   "essential": i == 0, "dependsOn": deps,
                                   "healthCheck": {"command": ["CMD", "probe"]}})
            })
            .collect();
        let doc = serde_json::json!({"family": "f", "containerDefinitions": defs});
        TaskDefinition::parse(&doc).unwrap().containers
    }

    fn drain(d: &mut Dependencies) -> Vec<Step> {
        std::iter::from_fn(|| d.next()).collect()
    }

    #[test]
    fn containers_start_in_dependency_order_as_their_conditions_are_met() {
        let c = containers(&[
            ("app", &[("init", "SUCCESS"), ("db", "HEALTHY")]),
            ("init", &[]),
            ("db", &[]),
            ("sidecar", &[("app", "START")]),
        ]);
        let mut d = Dependencies::new(&c);
        assert_eq!(drain(&mut d), [Step::Start(1), Step::Start(2)]);
        // init exits 0: app still waits for db to be HEALTHY.
        d.exited(1, Some(0));
        assert_eq!(drain(&mut d), []);
        d.healthy(2);
        // app starts, then (later in the same pass) the sidecar that
        // waited for it.
        assert_eq!(drain(&mut d), [Step::Start(0), Step::Start(3)]);
        assert_eq!(
            d.states(),
            [
                State::Running,
                State::Exited(Some(0)),
                State::Running,
                State::Running
            ]
        );
        assert!(d.any_running());
    }

    #[test]
    fn a_dependency_that_cannot_be_met_refuses_its_dependents_in_turn() {
        let mut c = containers(&[
            ("init", &[]),
            ("app", &[("init", "SUCCESS")]),
            ("web", &[("app", "START")]),
            ("probe", &[("init", "HEALTHY")]),
            ("lost", &[("init", "START")]),
        ]);
        // Registration refuses it; a definition stored before that rule
        // may still name one.
        c[4].depends_on[0].container = "nowhere".into();
        let mut d = Dependencies::new(&c);
        assert_eq!(
            drain(&mut d),
            [
                Step::Start(0),
                Step::Refuse(4, "unknown dependency nowhere".into())
            ]
        );
        d.exited(0, Some(3));
        assert_eq!(
            drain(&mut d),
            [
                Step::Refuse(
                    1,
                    "dependency init exited with code 3; SUCCESS needs 0".into()
                ),
                Step::Refuse(2, "dependency app never started".into()),
                Step::Refuse(3, "dependency init stopped before it was HEALTHY".into()),
            ]
        );
        assert!(!d.any_running());
    }

    #[test]
    fn a_container_that_failed_to_be_set_up_never_started() {
        let c = containers(&[("a", &[]), ("b", &[("a", "COMPLETE")])]);
        let mut d = Dependencies::new(&c);
        assert_eq!(d.next(), Some(Step::Start(0)));
        d.failed_to_start(0);
        assert_eq!(
            drain(&mut d),
            [Step::Refuse(1, "dependency a never started".into())]
        );
    }
}
