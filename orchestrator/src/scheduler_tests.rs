//! The scheduler against fake workers over channels: no network, full control of timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_shared::proto::coordinator_message::Kind as Down;
use braid_shared::proto::worker_message::Kind as Up;
use braid_shared::proto::{
    AttemptResult, AttemptStatus as PbStatus, CheckResult, CheckStatus as PbCheckStatus,
    CoordinatorMessage, Heartbeat,
};
use braid_tests::TestRepo;
use tokio::sync::mpsc;
use tonic::Status;

use crate::plan::{Agent, Check, MergeConfig, OnConflict, Plan, Select, Task};
use crate::report::{AttemptStatus, CheckStatus, TaskStatus};
use crate::scheduler::{Event, Outcome, RunContext, Scheduler, SchedulerConfig, WorkerLink};

type Inbox = mpsc::Receiver<Result<CoordinatorMessage, Status>>;

struct Harness {
    repo: TestRepo,
    events: mpsc::Sender<Event>,
    run: tokio::task::JoinHandle<Outcome>,
}

fn plan(repo: &TestRepo, attempts: u32) -> Plan {
    Plan {
        path: repo.outside().join("plan.yaml"),
        name: None,
        repo: repo.path.clone(),
        git_dir: repo.git_dir(),
        base_rev: "HEAD".into(),
        base_commit: repo.git(&["rev-parse", "HEAD"]),
        tasks: vec![Task {
            target: None,
            id: "t".into(),
            prompt: "p".into(),
            deps: vec![],
            agents: vec![Agent::command(vec!["true".into()])],
            budget: Default::default(),
            stall: None,
            setup: vec![],
            include: vec![],
            touches: vec![],
            attempts,
            timeout: Duration::from_secs(60),
            select: Select::Best,
            judge: None,
            checks: vec![],
            score: None,
            retries: 0,
            on_conflict: OnConflict::Report,
            sandbox: Default::default(),
            grace: Duration::from_secs(1),
            protect: vec![],
            requires: Default::default(),
        }],
        sandbox: Default::default(),
        merge: MergeConfig {
            on_conflict: OnConflict::Report,
            max_rebases: 1,
            verify: vec![],
        },
        budget: Default::default(),
        overlaps: vec![],
        warnings: vec![],
        publish: None,
        per_target: false,
        rerun_of: None,
        carried: Default::default(),
    }
}

fn start(attempts: u32, config: SchedulerConfig) -> Harness {
    start_with(attempts, config, |_| {})
}

fn start_with(attempts: u32, config: SchedulerConfig, edit: impl FnOnce(&mut Plan)) -> Harness {
    let repo = TestRepo::init();
    let mut plan = plan(&repo, attempts);
    edit(&mut plan);
    let ctx = RunContext {
        run_id: "test-run".into(),
        plan: Arc::new(plan),
        log_dir: repo.outside().join("logs"),
        repo_id: "0123456789abcdef0123456789abcdef".into(),
        started: Instant::now(),
    };
    let (events, rx) = mpsc::channel(256);
    let (notes, _) = mpsc::unbounded_channel();
    let scheduler =
        Scheduler::new(ctx, config, events.clone(), notes).expect("opens the repository");
    let run = braid_shared::task::spawn("scheduler", scheduler.run(rx));
    Harness { repo, events, run }
}

fn quick() -> SchedulerConfig {
    SchedulerConfig {
        heartbeat_interval: Duration::from_millis(50),
        heartbeat_timeout: Duration::from_secs(30),
        no_worker_timeout: None,
        ..SchedulerConfig::default()
    }
}

impl Harness {
    async fn join(&self, id: &str, slots: u32) -> Inbox {
        let (tx, rx) = mpsc::channel(64);
        let link = WorkerLink {
            id: id.into(),
            name: id.into(),
            slots,
            tx,
            pool: None,
            running: Vec::new(),
            labels: Default::default(),
        };
        self.events.send(Event::WorkerJoined(link)).await.unwrap();
        rx
    }

    async fn say(&self, worker: &str, kind: Up) {
        let event = Event::FromWorker {
            worker: worker.into(),
            kind: Box::new(kind),
            at: Instant::now(),
        };
        self.events.send(event).await.unwrap();
    }

    /// A commit the fake worker claims to have made.
    fn commit(&self, n: u32) -> String {
        self.repo.git(&[
            "commit-tree",
            "HEAD^{tree}",
            "-p",
            "HEAD",
            "-m",
            &format!("attempt {n}"),
        ])
    }

    async fn succeed(&self, worker: &str, lease: &str, n: u32) {
        let result = AttemptResult {
            lease_id: lease.into(),
            status: PbStatus::Finished as i32,
            commit: self.commit(n),
            ..Default::default()
        };
        self.say(worker, Up::Result(result)).await;
    }
}

/// The next message of a kind the test cares about (skips `Registered`-like noise).
async fn next(inbox: &mut Inbox) -> Down {
    let msg = tokio::time::timeout(Duration::from_secs(5), inbox.recv())
        .await
        .expect("a message within 5s")
        .expect("stream open")
        .expect("not an error");
    msg.kind.expect("a kind")
}

async fn assignment(inbox: &mut Inbox) -> (String, u32) {
    match next(inbox).await {
        Down::Assign(assign) => (assign.lease_id, assign.attempt.expect("spec").attempt),
        other => panic!("expected Assign, got {other:?}"),
    }
}

async fn quiet(inbox: &mut Inbox) {
    let got = tokio::time::timeout(Duration::from_millis(200), inbox.recv()).await;
    assert!(got.is_err(), "expected nothing, got {got:?}");
}

#[tokio::test]
async fn never_assigns_past_free_slots() {
    let h = start(3, quick());
    let mut w1 = h.join("w1", 2).await;
    let (l1, n1) = assignment(&mut w1).await;
    let (l2, n2) = assignment(&mut w1).await;
    assert_ne!(l1, l2);
    assert_eq!((n1, n2), (1, 2));
    quiet(&mut w1).await;
    h.succeed("w1", &l1, n1).await;
    assert!(matches!(next(&mut w1).await, Down::ResultAck(ack) if ack.accepted));
    let (l3, n3) = assignment(&mut w1).await;
    assert_eq!(n3, 3);
    h.succeed("w1", &l2, n2).await;
    h.succeed("w1", &l3, n3).await;
    let outcome = h.run.await.unwrap();
    assert_eq!(outcome.tasks[0].status, TaskStatus::Succeeded);
    assert_eq!(outcome.tasks[0].winner, Some(1));
}

#[tokio::test]
async fn a_lost_worker_is_rescheduled_and_stale_results_are_refused() {
    let h = start(1, quick());
    let mut w1 = h.join("w1", 1).await;
    let (stale, n) = assignment(&mut w1).await;
    h.events
        .send(Event::WorkerLeft {
            worker: "w1".into(),
            reason: "gone".into(),
        })
        .await
        .unwrap();
    let mut w2 = h.join("w2", 1).await;
    let (current, again) = assignment(&mut w2).await;
    assert_eq!(again, n, "the same attempt runs again");
    assert_ne!(current, stale, "under a new lease");
    // A result under the old lease is refused, even from a live worker.
    h.succeed("w2", &stale, n).await;
    match next(&mut w2).await {
        Down::ResultAck(ack) => {
            assert!(!ack.accepted);
            assert!(ack.reason.contains("stale lease"), "{}", ack.reason);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    h.succeed("w2", &current, n).await;
    assert!(matches!(next(&mut w2).await, Down::ResultAck(ack) if ack.accepted));
    let outcome = h.run.await.unwrap();
    let attempt = &outcome.tasks[0].attempts[0];
    assert_eq!(attempt.status, AttemptStatus::Succeeded);
    assert_eq!(attempt.lost, 1);
    assert_eq!(attempt.worker.as_deref(), Some("w2"));
    // The lost run did not use up an attempt.
    assert_eq!(outcome.tasks[0].attempts.len(), 1);
}

#[tokio::test]
async fn an_attempt_lost_three_times_is_given_up() {
    let h = start(1, quick());
    for i in 1..=3 {
        let id = format!("w{i}");
        let mut inbox = h.join(&id, 1).await;
        assignment(&mut inbox).await;
        h.events
            .send(Event::WorkerLeft {
                worker: id,
                reason: "crashed".into(),
            })
            .await
            .unwrap();
    }
    let outcome = h.run.await.unwrap();
    let attempt = &outcome.tasks[0].attempts[0];
    assert_eq!(attempt.status, AttemptStatus::Lost);
    assert_eq!(attempt.lost, 3);
    assert_eq!(outcome.tasks[0].status, TaskStatus::Failed);
}

#[tokio::test]
async fn a_silent_worker_loses_its_attempts() {
    let h = start(
        1,
        SchedulerConfig {
            heartbeat_timeout: Duration::from_millis(300),
            ..quick()
        },
    );
    let mut silent = h.join("silent", 1).await;
    let (_, n) = assignment(&mut silent).await;
    // A worker that keeps beating keeps its place; this one says nothing.
    let mut alive = h.join("alive", 1).await;
    let beat = async {
        loop {
            h.say("alive", Up::Heartbeat(Heartbeat::default())).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (lease, again) = tokio::select! {
        got = assignment(&mut alive) => got,
        () = beat => unreachable!(),
    };
    assert_eq!(again, n);
    h.succeed("alive", &lease, n).await;
    let outcome = h.run.await.unwrap();
    assert_eq!(outcome.tasks[0].attempts[0].lost, 1);
    assert_eq!(outcome.tasks[0].status, TaskStatus::Succeeded);
    assert!(outcome.workers.iter().any(|w| w.id == "silent"));
}

#[tokio::test]
async fn infrastructure_failures_are_retried_without_using_an_attempt() {
    let h = start(1, quick());
    let mut w1 = h.join("w1", 1).await;
    let (lease, n) = assignment(&mut w1).await;
    let failure = AttemptResult {
        lease_id: lease,
        status: PbStatus::Failed as i32,
        error: "could not prepare a worktree".into(),
        infrastructure: true,
        ..Default::default()
    };
    h.say("w1", Up::Result(failure)).await;
    assert!(matches!(next(&mut w1).await, Down::ResultAck(ack) if ack.accepted));
    let (again, n2) = assignment(&mut w1).await;
    assert_eq!(n2, n);
    h.succeed("w1", &again, n).await;
    let outcome = h.run.await.unwrap();
    assert_eq!(outcome.tasks[0].status, TaskStatus::Succeeded);
    assert_eq!(outcome.tasks[0].attempts[0].lost, 1);
}

#[tokio::test]
async fn a_provider_refusing_for_now_costs_no_attempt_but_its_tokens_count() {
    let h = start(1, quick());
    let mut w1 = h.join("w1", 1).await;
    let (lease, n) = assignment(&mut w1).await;
    let refused = AttemptResult {
        lease_id: lease,
        status: PbStatus::Failed as i32,
        error: "the agent exited with code 1: 429 Too Many Requests".into(),
        provider_fault: braid_shared::proto::ProviderFault::Transient as i32,
        usage: Some(braid_shared::proto::Usage {
            input_tokens: Some(100),
            output_tokens: Some(5),
            ..Default::default()
        }),
        ..Default::default()
    };
    h.say("w1", Up::Result(refused)).await;
    assert!(matches!(next(&mut w1).await, Down::ResultAck(ack) if ack.accepted));
    let (again, n2) = assignment(&mut w1).await;
    assert_eq!(n2, n, "the same attempt, not a new one");
    h.succeed("w1", &again, n).await;
    let outcome = h.run.await.unwrap();
    assert_eq!(outcome.tasks[0].status, TaskStatus::Succeeded);
    assert_eq!(outcome.tasks[0].attempts.len(), 1);
    assert_eq!(outcome.tasks[0].attempts[0].usage.input_tokens, Some(100));
    assert!(outcome.stopped.is_empty());
}

/// Gives the plan's task one check, `unit`, judged against the base.
fn with_unit_check(plan: &mut Plan) {
    plan.tasks[0].checks = vec![Check {
        cwd: String::new(),
        name: "unit".into(),
        run: "make test".into(),
        timeout: Duration::from_secs(60),
        paths: vec![],
        baseline: true,
        per_package: false,
    }];
}

fn unit_check(status: PbCheckStatus) -> CheckResult {
    CheckResult {
        name: "unit".into(),
        status: status as i32,
        exit_code: Some(if status == PbCheckStatus::Passed {
            0
        } else {
            1
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_failed_check_waits_for_the_baseline_and_is_then_pre_existing() {
    let h = start_with(1, quick(), with_unit_check);
    let mut w1 = h.join("w1", 2).await;
    // The baseline job goes first, and carries only the checks.
    let (baseline, spec) = match next(&mut w1).await {
        Down::Assign(a) => (a.lease_id, a.attempt.unwrap()),
        other => panic!("expected Assign, got {other:?}"),
    };
    assert!(spec.baseline);
    assert!(spec.agent.is_none());
    assert_eq!(spec.checks.len(), 1);
    let (lease, n) = assignment(&mut w1).await;
    assert_eq!(n, 1);
    let result = AttemptResult {
        lease_id: lease,
        status: PbStatus::Finished as i32,
        commit: h.commit(1),
        checks: vec![unit_check(PbCheckStatus::Failed)],
        ..Default::default()
    };
    h.say("w1", Up::Result(result)).await;
    assert!(matches!(next(&mut w1).await, Down::ResultAck(ack) if ack.accepted));
    // Until the base has spoken, the attempt is not judged and the run goes on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!h.run.is_finished());
    let on_base = AttemptResult {
        lease_id: baseline,
        status: PbStatus::Finished as i32,
        checks: vec![unit_check(PbCheckStatus::Failed)],
        ..Default::default()
    };
    h.say("w1", Up::Result(on_base)).await;
    let outcome = h.run.await.unwrap();
    let task = &outcome.tasks[0];
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.winner, Some(1));
    assert_eq!(task.baseline.len(), 1);
    assert_eq!(task.attempts.len(), 1, "the baseline job is not an attempt");
    assert_eq!(task.attempts[0].checks[0].status, CheckStatus::PreExisting);
}

#[tokio::test]
async fn a_check_the_base_passes_is_blamed() {
    let h = start_with(1, quick(), with_unit_check);
    let mut w1 = h.join("w1", 2).await;
    let baseline = match next(&mut w1).await {
        Down::Assign(a) => a.lease_id,
        other => panic!("expected Assign, got {other:?}"),
    };
    let (lease, _) = assignment(&mut w1).await;
    let on_base = AttemptResult {
        lease_id: baseline,
        status: PbStatus::Finished as i32,
        checks: vec![unit_check(PbCheckStatus::Passed)],
        ..Default::default()
    };
    h.say("w1", Up::Result(on_base)).await;
    let result = AttemptResult {
        lease_id: lease,
        status: PbStatus::Finished as i32,
        commit: h.commit(1),
        checks: vec![unit_check(PbCheckStatus::Failed)],
        ..Default::default()
    };
    h.say("w1", Up::Result(result)).await;
    let outcome = h.run.await.unwrap();
    let attempt = &outcome.tasks[0].attempts[0];
    assert_eq!(outcome.tasks[0].status, TaskStatus::Failed);
    assert_eq!(attempt.status, AttemptStatus::Failed);
    assert_eq!(attempt.checks[0].status, CheckStatus::Failed);
    assert_eq!(attempt.error.as_deref(), Some("check unit did not pass"));
}

#[tokio::test]
async fn a_result_sent_just_before_the_worker_went_away_is_kept() {
    let h = start(1, quick());
    let mut w1 = h.join("w1", 1).await;
    let (lease, n) = assignment(&mut w1).await;
    // The worker sends its last result and closes its stream: the answer to the result
    // finds nobody, and the worker is dropped while its result is being taken.
    drop(w1);
    h.succeed("w1", &lease, n).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), h.run)
        .await
        .expect("the run ends")
        .expect("the scheduler did not panic");
    let attempt = &outcome.tasks[0].attempts[0];
    assert_eq!(attempt.status, AttemptStatus::Succeeded);
    assert_eq!(attempt.lost, 0);
    assert_eq!(outcome.tasks[0].status, TaskStatus::Succeeded);
}

#[tokio::test]
async fn a_worker_is_alive_as_of_when_its_message_arrived() {
    let h = start(
        1,
        SchedulerConfig {
            heartbeat_timeout: Duration::from_secs(1),
            ..quick()
        },
    );
    let joined = Instant::now();
    let mut w1 = h.join("w1", 1).await;
    let (lease, n) = assignment(&mut w1).await;
    let mut w2 = h.join("w2", 1).await;
    // Heartbeats that all arrived when w1 joined, handled one by one only later: w1 has
    // been silent since then, however recent its messages look to the loop.
    let beat = async {
        loop {
            let event = Event::FromWorker {
                worker: "w1".into(),
                kind: Box::new(Up::Heartbeat(Heartbeat::default())),
                at: joined,
            };
            h.events.send(event).await.unwrap();
            h.say("w2", Up::Heartbeat(Heartbeat::default())).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (current, again) = tokio::select! {
        got = assignment(&mut w2) => got,
        () = beat => unreachable!(),
    };
    assert_eq!(again, n, "w1's attempt moved to w2");
    assert_ne!(current, lease);
    h.succeed("w2", &current, again).await;
    let outcome = h.run.await.unwrap();
    assert_eq!(outcome.tasks[0].attempts[0].lost, 1);
}

#[test]
fn lost_attempts_back_off_with_jitter() {
    let base = Duration::from_millis(100);
    for lost in 1..=3u32 {
        let nominal = base * 2u32.pow(lost - 1);
        let delays: Vec<Duration> = (0..50)
            .map(|_| crate::scheduler::retry_delay(base, lost))
            .collect();
        for d in &delays {
            assert!(
                *d >= nominal / 2 && *d <= nominal * 3 / 2,
                "{d:?} for {lost}"
            );
        }
        let first = delays[0];
        assert!(delays.iter().any(|d| *d != first), "no jitter: {delays:?}");
    }
    assert!(crate::scheduler::retry_delay(base, 40) <= base * 48);
}

/// The task and lease of the next assignment.
async fn assigned_task(inbox: &mut Inbox) -> (String, String) {
    loop {
        match next(inbox).await {
            Down::Assign(assign) => {
                return (assign.attempt.expect("spec").task_id, assign.lease_id);
            }
            Down::ResultAck(_) => {}
            other => panic!("expected Assign, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_slot_is_kept_for_the_next_task_of_a_chain_while_trial_merges_run() {
    // `a` heads a chain (`b` waits on it, `e` on `b`); `x`, `c` and `d` wait on nothing
    // and nothing waits on them. When `a` ends, its winner is trial-merged with `x`'s, and
    // `b` waits for that: the slot `a` freed must go to `b`, not to `d`.
    let h = start_with(1, quick(), |plan| {
        let template = plan.tasks[0].clone();
        plan.tasks = [
            ("a", vec![]),
            ("x", vec![]),
            ("b", vec!["a"]),
            ("e", vec!["b"]),
            ("c", vec![]),
            ("d", vec![]),
        ]
        .into_iter()
        .map(|(id, deps): (&str, Vec<&str>)| Task {
            id: id.into(),
            deps: deps.into_iter().map(Into::into).collect(),
            ..template.clone()
        })
        .collect();
    });
    let mut w1 = h.join("w1", 2).await;
    let (first, a) = assigned_task(&mut w1).await;
    let (second, x) = assigned_task(&mut w1).await;
    assert_eq!((first.as_str(), second.as_str()), ("a", "x"));
    h.succeed("w1", &x, 1).await;
    let (third, c) = assigned_task(&mut w1).await;
    assert_eq!(third, "c");
    h.succeed("w1", &a, 1).await;
    let (fourth, b) = assigned_task(&mut w1).await;
    assert_eq!(fourth, "b", "the slot a freed went to a task off the chain");
    h.succeed("w1", &c, 1).await;
    let (fifth, d) = assigned_task(&mut w1).await;
    assert_eq!(fifth, "d");
    h.succeed("w1", &b, 1).await;
    let (sixth, e) = assigned_task(&mut w1).await;
    assert_eq!(sixth, "e");
    h.succeed("w1", &d, 1).await;
    h.succeed("w1", &e, 1).await;
    let outcome = h.run.await.unwrap();
    assert!(
        outcome
            .tasks
            .iter()
            .all(|t| t.status == TaskStatus::Succeeded)
    );
}
