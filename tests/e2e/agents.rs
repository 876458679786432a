//! The agent presets, driven through `braid run` with the real CLIs (installed by `.ci/run`)
//! against the scripted model server of the test support: each writes a file with its own
//! tools, and braid's report must hold exactly the usage the server reported. Then the
//! faults: a provider's terminal refusal, budgets, stalls, a bake-off, and a key that must
//! appear in no file braid wrote.

use std::path::Path;
use std::process::Output;

use braid_tests::model::{Fault, ModelServer, Script, Tokens};
use braid_tests::{TestRepo, command, files_under, stderr, stdout};
use serde_json::Value;

use crate::{BIN, attempt, task};

/// The key every test's agents get, in `BRAID_TEST_KEY`.
pub(crate) const KEY: &str = "sk-test-4f9b2c7e1d0a6835";

/// Runs `braid run plan --json` with the test key set and a home of the test's own, so no
/// login of the machine's user is seeded into the CLIs' config folders.
fn run_with_key(repo: &TestRepo, plan: &Path, extra: &[&str]) -> (Output, Value) {
    let home = repo.outside().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut args = vec!["run", plan.to_str().expect("utf-8"), "--json"];
    args.extend_from_slice(extra);
    let out = command(BIN, repo.outside())
        .args(&args)
        .env("BRAID_LOG", "warn")
        .env("BRAID_TEST_KEY", KEY)
        .env("HOME", &home)
        .output()
        .expect("braid runs");
    let report = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
        panic!(
            "report.json on stdout ({e}); exit {:?}\nstderr:\n{}",
            out.status.code(),
            stderr(&out)
        )
    });
    (out, report)
}

/// A server whose tools write into the worktrees of `repo`'s runs.
pub(crate) fn server_for(repo: &TestRepo, script: Script) -> ModelServer {
    ModelServer::start(Script {
        root: Some(repo.cache().join("work").to_string_lossy().into_owned()),
        ..script
    })
}

/// The base URL a preset is given: OpenAI-style endpoints take `/v1`.
fn base_url(preset: &str, server: &ModelServer) -> String {
    match preset {
        "claude" | "gemini" => server.url(),
        _ => format!("{}/v1", server.url()),
    }
}

/// The agent map of a plan for `preset` against `server`.
pub(crate) fn agent(preset: &str, server: &ModelServer) -> String {
    format!(
        r#"{{preset: {preset}, model: test-model, base_url: "{}", api_key_env: BRAID_TEST_KEY}}"#,
        base_url(preset, server)
    )
}

/// That `braid agents` says the preset's CLI is installed: a test of a CLI that is not
/// fails here, saying so, instead of in a puzzling report.
pub(crate) fn assert_installed(preset: &str) {
    let out = command(BIN, Path::new("/"))
        .args(["agents", "--json"])
        .output()
        .expect("braid agents");
    let list: Value = serde_json::from_str(&stdout(&out)).expect("braid agents --json");
    let row = list
        .as_array()
        .expect("a list")
        .iter()
        .find(|r| r["preset"] == preset)
        .unwrap_or_else(|| panic!("no preset {preset} in {list:#}"));
    assert_eq!(
        row["installed"], true,
        "the {preset} CLI is not installed here ({}); .ci/run installs it",
        row["problem"]
    );
}

fn usage_of(a: &Value) -> (Value, Value, Value, Value) {
    let u = &a["usage"];
    (
        u["input_tokens"].clone(),
        u["cached_input_tokens"].clone(),
        u["output_tokens"].clone(),
        u["turns"].clone(),
    )
}

/// A plan of one best-of-2 task, `hello`, for `agent`, checked by the file the scripted
/// server has the agent write.
fn hello_plan(repo: &TestRepo, agent: &str) -> std::path::PathBuf {
    repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: hello
    prompt: Create the file hello.txt that says hello.
    attempts: 2
    agent: {agent}
    checks:
      - {{name: made, run: "grep -q 'hello from the model' hello.txt"}}
"#
    ))
}

/// A best-of-2 task through `preset`: both attempts write the file with the CLI's own
/// tools, pass the check, and report what the server reported.
fn best_of_two(preset: &str) {
    assert_installed(preset);
    let repo = TestRepo::init();
    let script = Script::default();
    let server = server_for(&repo, script.clone());
    let plan = hello_plan(&repo, &agent(preset, &server));
    let before = repo.snapshot();
    let (out, report) = run_with_key(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    let t = task(&report, "hello");
    // aider answers in one reply (a whole file), the others call a tool and then finish.
    let (per_attempt, turns) = if preset == "aider" {
        (script.tool_turn, 1)
    } else {
        (
            Tokens {
                input: script.tool_turn.input + script.final_turn.input,
                cached: script.tool_turn.cached + script.final_turn.cached,
                output: script.tool_turn.output + script.final_turn.output,
            },
            2,
        )
    };
    for n in [1, 2] {
        let a = attempt(t, n);
        assert_eq!(a["status"], "succeeded", "{a:#}");
        assert_eq!(a["agent"], preset);
        assert_eq!(a["model"], "test-model");
        assert_eq!(
            a["diff"]["files"], 1,
            "only hello.txt, no CLI litter: {a:#}"
        );
        let (input, cached, output, t) = usage_of(a);
        assert_eq!(input, per_attempt.input, "{preset} input tokens: {a:#}");
        assert_eq!(output, per_attempt.output, "{preset} output tokens: {a:#}");
        assert_eq!(t, turns, "{preset} turns: {a:#}");
        if preset == "aider" {
            // aider tells no cache reads for OpenAI-style replies: unknown, not zero.
            assert_eq!(cached, Value::Null, "{a:#}");
        } else {
            assert_eq!(cached, per_attempt.cached, "{preset} cached tokens: {a:#}");
        }
        let events = a["events"].as_str().expect("an events file");
        let events = std::fs::read_to_string(events).expect("events file");
        assert!(
            events.lines().any(|l| l.contains("\"type\":\"usage")),
            "{events}"
        );
    }
    // The run's total is the server's.
    let reported = server.reported();
    assert_eq!(
        report["usage"]["input_tokens"], reported.input,
        "{report:#}"
    );
    assert_eq!(report["usage"]["output_tokens"], reported.output);
    // Every conversation request came with the key, taken from the variable the plan named.
    let conversation = server.conversation();
    assert_eq!(conversation.len(), if preset == "aider" { 2 } else { 4 });
    assert!(
        conversation.iter().all(|s| s.key.contains(KEY)),
        "{:?}",
        conversation.iter().map(|s| &s.key).collect::<Vec<_>>()
    );
    let winner = report["result"]["commit"].as_str().expect("a result");
    assert_eq!(
        repo.show(winner, "hello.txt").as_deref(),
        Some("hello from the model\n")
    );
    repo.assert_untouched(&before);
}

#[test]
fn codex_best_of_two() {
    best_of_two("codex");
}

#[test]
fn claude_best_of_two() {
    best_of_two("claude");
}

#[test]
fn gemini_best_of_two() {
    best_of_two("gemini");
}

#[test]
fn opencode_best_of_two() {
    let _inotify = crate::INOTIFY.read().unwrap_or_else(|e| e.into_inner());
    best_of_two("opencode");
}

#[test]
fn aider_best_of_two() {
    best_of_two("aider");
}

#[test]
fn a_terminal_provider_error_stops_the_other_attempts() {
    assert_installed("codex");
    let repo = TestRepo::init();
    let server = server_for(
        &repo,
        Script {
            fault: Some(Fault::QuotaExhausted),
            ..Script::default()
        },
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: wall
    prompt: Create hello.txt.
    attempts: 4
    agent: {}
  - id: later
    deps: [wall]
    prompt: Create hello.txt.
    agent: {}
"#,
        agent("codex", &server),
        agent("codex", &server)
    ));
    let (out, report) = run_with_key(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    // One attempt met the wall; none of the other three was sent into it.
    let conversations = server.conversation().len();
    assert_eq!(
        conversations, 1,
        "requests after the quota error: {conversations}"
    );
    let t = task(&report, "wall");
    let first = attempt(t, 1);
    assert_eq!(first["status"], "failed");
    assert!(
        first["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Quota exceeded"),
        "{first:#}"
    );
    for n in 2..=4 {
        let a = attempt(t, n);
        assert_eq!(a["status"], "failed", "{a:#}");
        assert!(
            a["error"].as_str().unwrap_or_default().starts_with(
                "not started: the provider of agent codex test-model refused for good"
            ),
            "{a:#}"
        );
    }
    let stopped = report["stopped"].as_array().expect("stopped");
    assert_eq!(stopped.len(), 1, "{report:#}");
    assert!(stopped[0].as_str().unwrap().contains("Quota exceeded"));
    // The summary says so first.
    let text = braid_tests::braid(
        Path::new(BIN),
        repo.outside(),
        &["report", "latest", "--repo", repo.path.to_str().unwrap()],
    );
    assert!(stdout(&text).contains("Stopped early"), "{}", stdout(&text));
}

#[test]
fn an_attempt_past_its_token_budget_is_over_budget() {
    assert_installed("claude");
    let repo = TestRepo::init();
    let server = server_for(&repo, Script::default());
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: costly
    prompt: Create hello.txt.
    agent: {}
    budget: {{tokens: 1000}}
"#,
        agent("claude", &server)
    ));
    let (out, report) = run_with_key(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let a = attempt(task(&report, "costly"), 1);
    assert_eq!(a["status"], "over_budget", "{a:#}");
    assert!(
        a["error"]
            .as_str()
            .unwrap_or_default()
            .contains("past the attempt's budget of 1000"),
        "{a:#}"
    );
    // Its work is kept on its branch all the same.
    assert!(a["commit"].is_string(), "{a:#}");
}

#[test]
fn the_run_budget_stops_new_attempts() {
    let repo = TestRepo::init();
    let agent = repo.script(
        "spend.sh",
        "#!/bin/sh\necho \"$BRAID_ATTEMPT\" > \"f$BRAID_ATTEMPT.txt\"\n\
         echo '{\"input_tokens\": 600, \"output_tokens\": 100, \"cost_usd\": 0.5}' > \"$BRAID_USAGE_FILE\"\n",
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
budget: {{usd: 0.9}}
tasks:
  - id: spend
    prompt: Spend.
    attempts: 4
    agent: {{command: ["{}"]}}
"#,
        agent.display()
    ));
    let (out, report) = run_with_key(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let t = task(&report, "spend");
    assert_eq!(attempt(t, 1)["status"], "succeeded");
    assert_eq!(attempt(t, 1)["usage"]["cost_usd"], 0.5);
    assert_eq!(attempt(t, 2)["status"], "succeeded");
    for n in [3, 4] {
        let a = attempt(t, n);
        assert_eq!(a["status"], "cancelled", "{a:#}");
        assert!(
            a["error"]
                .as_str()
                .unwrap()
                .contains("the run's budget was spent"),
            "{a:#}"
        );
    }
    assert_eq!(report["usage"]["cost_usd"], 1.0);
    assert_eq!(report["usage"]["input_tokens"], 1200);
    assert!(
        report["stopped"][0]
            .as_str()
            .unwrap_or_default()
            .contains("past the run's budget of $0.9"),
        "{report:#}"
    );
}

#[test]
fn a_silent_agent_is_stalled() {
    let repo = TestRepo::init();
    let agent = repo.script(
        "quiet.sh",
        "#!/bin/sh\necho starting\necho work > made.txt\nsleep 30\n",
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: quiet
    prompt: Think quietly.
    stall: 1s
    timeout: 60s
    agent: {{command: ["{}"]}}
"#,
        agent.display()
    ));
    let started = std::time::Instant::now();
    let (out, report) = run_with_key(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert!(
        started.elapsed().as_secs() < 25,
        "stopped at the stall, not the sleep's end"
    );
    let a = attempt(task(&report, "quiet"), 1);
    assert_eq!(a["status"], "stalled", "{a:#}");
    assert_eq!(
        a["error"], "the agent printed nothing for 1s and was stopped",
        "{a:#}"
    );
    assert!(a["commit"].is_string(), "what it did is kept: {a:#}");
    assert!(repo.survivors().is_empty(), "{:?}", repo.survivors());
}

#[test]
fn a_bake_off_spreads_attempts_over_agents() {
    assert_installed("codex");
    assert_installed("claude");
    let repo = TestRepo::init();
    let server = server_for(&repo, Script::default());
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: bake
    prompt: Create hello.txt.
    attempts: 4
    agents: [{}, {}]
    checks:
      - {{name: made, run: "test -f hello.txt"}}
"#,
        agent("codex", &server),
        agent("claude", &server)
    ));
    let (out, report) = run_with_key(&repo, &plan, &["--workers", "2"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    let t = task(&report, "bake");
    for (n, preset) in [(1, "codex"), (2, "claude"), (3, "codex"), (4, "claude")] {
        let a = attempt(t, n);
        assert_eq!(a["agent"], preset, "{a:#}");
        assert_eq!(a["status"], "succeeded", "{a:#}");
    }
    // Claude Code prices its own turns; Codex reports none and braid has no price for
    // `test-model`: the task's cost is Claude's alone.
    let claude: f64 = [2, 4]
        .iter()
        .map(|n| attempt(t, *n)["usage"]["cost_usd"].as_f64().unwrap())
        .sum();
    assert!((t["usage"]["cost_usd"].as_f64().unwrap() - claude).abs() < 1e-9);
    let compare = braid_tests::braid(
        Path::new(BIN),
        repo.outside(),
        &[
            "compare",
            "latest",
            "bake",
            "--json",
            "--repo",
            repo.path.to_str().unwrap(),
        ],
    );
    let compare: Value = serde_json::from_str(&stdout(&compare)).expect("compare --json");
    let agents = compare["agents"].as_array().expect("a per-agent summary");
    assert_eq!(agents.len(), 2, "{compare:#}");
    for row in agents {
        assert_eq!(row["attempts"], 2, "{row:#}");
        assert_eq!(row["passed"], 2, "{row:#}");
    }
    let text = braid_tests::braid(
        Path::new(BIN),
        repo.outside(),
        &[
            "compare",
            "latest",
            "bake",
            "--repo",
            repo.path.to_str().unwrap(),
        ],
    );
    assert!(stdout(&text).contains("by agent:"), "{}", stdout(&text));
    // The HTML report names each attempt's agent and model, and has the per-agent table.
    let html = braid_tests::braid(
        Path::new(BIN),
        repo.outside(),
        &[
            "report",
            "latest",
            "--format",
            "html",
            "--repo",
            repo.path.to_str().unwrap(),
        ],
    );
    let path = stdout(&html).trim().to_owned();
    let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(page.contains("<td>codex test-model</td>"), "{page}");
    assert!(page.contains("<td>claude test-model</td>"));
    assert!(page.contains("<table class=\"agents\">"));
}

#[test]
fn the_key_appears_in_no_file_braid_wrote() {
    assert_installed("codex");
    let repo = TestRepo::init();
    // The model even says the key back, and the CLI prints what the model says.
    let server = server_for(
        &repo,
        Script {
            final_text: format!("Done. The key was {KEY}."),
            ..Script::default()
        },
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: secret
    prompt: Create hello.txt.
    attempts: 2
    agent: {}
"#,
        agent("codex", &server)
    ));
    let (out, report) = run_with_key(&repo, &plan, &["--verbose"]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert!(
        server.conversation().iter().all(|s| s.key.contains(KEY)),
        "the key was used"
    );
    for text in [stdout(&out), stderr(&out)] {
        assert!(!text.contains(KEY), "the key in braid's output");
    }
    let html = braid_tests::braid(
        Path::new(BIN),
        repo.outside(),
        &[
            "report",
            "latest",
            "--format",
            "html",
            "--repo",
            repo.path.to_str().unwrap(),
        ],
    );
    assert!(html.status.success());
    let mut looked = 0;
    for dir in [repo.git_dir(), repo.cache(), repo.path.clone()] {
        for (path, bytes) in files_under(&dir) {
            looked += 1;
            assert!(
                !String::from_utf8_lossy(&bytes).contains(KEY),
                "the key is in {}",
                path.display()
            );
        }
    }
    assert!(looked > 10, "looked at {looked} files");
}

/// The agent map of the built-in agent on `api` against `server`.
fn builtin(api: &str, server: &ModelServer) -> String {
    let url = if api == "anthropic" {
        server.url()
    } else {
        format!("{}/v1", server.url())
    };
    format!(
        r#"{{builtin: {{api: {api}, model: test-model, base_url: "{url}", api_key_env: BRAID_TEST_KEY}}}}"#
    )
}

#[test]
fn the_builtin_agent_on_each_api() {
    for api in ["responses", "chat", "anthropic"] {
        let repo = TestRepo::init();
        let script = Script::default();
        let server = server_for(&repo, script.clone());
        let plan = hello_plan(&repo, &builtin(api, &server));
        let (out, report) = run_with_key(&repo, &plan, &["--workers", "2"]);
        assert_eq!(out.status.code(), Some(0), "{api}: {report:#}");
        for n in [1, 2] {
            let a = attempt(task(&report, "hello"), n);
            assert_eq!(a["status"], "succeeded", "{api}: {a:#}");
            assert_eq!(a["agent"], "builtin");
            let (input, cached, output, turns) = usage_of(a);
            assert_eq!(
                input,
                script.tool_turn.input + script.final_turn.input,
                "{api}: {a:#}"
            );
            assert_eq!(
                cached,
                script.tool_turn.cached + script.final_turn.cached,
                "{api}"
            );
            assert_eq!(
                output,
                script.tool_turn.output + script.final_turn.output,
                "{api}"
            );
            assert_eq!(turns, 2, "{api}");
            assert_eq!(a["final_message"], script.final_text, "{api}");
        }
        assert_eq!(
            report["usage"]["input_tokens"],
            server.reported().input,
            "{api}"
        );
        let keys: Vec<String> = server
            .conversation()
            .iter()
            .map(|s| s.key.clone())
            .collect();
        assert_eq!(keys.len(), 4, "{api}");
        assert!(keys.iter().all(|k| k.contains(KEY)), "{api}: {keys:?}");
    }
}

#[test]
fn a_rate_limit_is_waited_out_without_using_an_attempt() {
    let repo = TestRepo::init();
    let server = server_for(
        &repo,
        Script {
            fault: Some(Fault::RateLimited { times: 2, secs: 1 }),
            ..Script::default()
        },
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: limited
    prompt: Create hello.txt.
    agent: {}
"#,
        builtin("responses", &server)
    ));
    let started = std::time::Instant::now();
    let (out, report) = run_with_key(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    // Two refusals, each waited out for its Retry-After of one second.
    assert!(
        started.elapsed().as_millis() >= 2000,
        "{:?}",
        started.elapsed()
    );
    let t = task(&report, "limited");
    assert_eq!(
        t["attempts"].as_array().unwrap().len(),
        1,
        "no attempt used up: {t:#}"
    );
    let a = attempt(t, 1);
    assert_eq!(a["status"], "succeeded", "{a:#}");
    assert_eq!(a["lost"], 0);
    let answers: Vec<&str> = server.conversation().iter().map(|s| s.answer).collect();
    assert_eq!(answers, ["fault", "fault", "tool", "final"]);
    let events = std::fs::read_to_string(a["events"].as_str().unwrap()).unwrap();
    let retries = events.lines().filter(|l| l.contains("429")).count();
    assert_eq!(retries, 2, "{events}");
}

#[test]
fn a_refused_key_stops_the_builtin_agent_at_once() {
    let repo = TestRepo::init();
    let server = server_for(
        &repo,
        Script {
            fault: Some(Fault::Unauthorized),
            ..Script::default()
        },
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
tasks:
  - id: refused
    prompt: Create hello.txt.
    attempts: 3
    agent: {}
"#,
        builtin("chat", &server)
    ));
    let (out, report) = run_with_key(&repo, &plan, &["--workers", "1"]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(
        server.conversation().len(),
        1,
        "one request, not one per attempt or try"
    );
    let t = task(&report, "refused");
    assert!(
        attempt(t, 1)["error"].as_str().unwrap().contains("401"),
        "{t:#}"
    );
    for n in [2, 3] {
        assert!(
            attempt(t, n)["error"]
                .as_str()
                .unwrap()
                .starts_with("not started"),
            "{t:#}"
        );
    }
}

/// A shell line that says whether it could open a TCP connection to the model server
/// itself: the one address the agent's model calls go to.
/// (`/dev/tcp` is bash's; the built-in agent's shell is `sh`.)
const PROBE: &str = "bash -c '(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo reached > net.txt || echo blocked > net.txt'";

/// Runs a one-attempt task of `agent_for(server)` whose agent runs [`probe`] with its shell
/// tool, under `sandbox`; what the probe wrote.
fn probed(agent_for: impl Fn(&ModelServer) -> String, sandbox: &str) -> String {
    let repo = TestRepo::init();
    let server = server_for(
        &repo,
        Script {
            command: Some(PROBE.to_owned()),
            ..Script::default()
        },
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
{sandbox}
tasks:
  - id: probe
    prompt: Probe the network.
    agent: {}
"#,
        agent_for(&server)
    ));
    let (out, report) = run_with_key(&repo, &plan, &[]);
    assert_eq!(out.status.code(), Some(0), "{report:#}\n{}", stderr(&out));
    let commit = attempt(task(&report, "probe"), 1)["commit"]
        .as_str()
        .expect("a commit")
        .to_owned();
    repo.show(&commit, "net.txt")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn network_model_lets_a_cli_reach_its_model_and_nothing_else() {
    assert_installed("codex");
    // By default: the model's answers arrive (through braid's bridge), and the agent's own
    // connection to the same address fails.
    assert_eq!(probed(|s| agent("codex", s), ""), "blocked");
    assert_eq!(
        probed(|s| agent("codex", s), "sandbox: {network: model}"),
        "blocked"
    );
    // With the machine's network, the same connection goes through: the probe can tell.
    assert_eq!(
        probed(|s| agent("codex", s), "sandbox: {network: full}"),
        "reached"
    );
}

#[test]
fn the_builtin_agents_shell_has_no_network_by_default() {
    assert_eq!(probed(|s| builtin("responses", s), ""), "blocked");
    assert_eq!(
        probed(|s| builtin("responses", s), "sandbox: {network: full}"),
        "reached"
    );
}

#[test]
fn setup_include_and_a_block_of_ports_per_attempt() {
    let repo = TestRepo::init();
    repo.commit(&[(".gitignore", ".env\nbuild/\n")], "ignore .env");
    std::fs::write(repo.path.join(".env"), "TOKEN=local-only\n").unwrap();
    let agent = repo.script(
        "agent.sh",
        "#!/bin/sh\nset -e\n{ echo \"port=$BRAID_PORT_BASE count=$BRAID_PORT_COUNT\"; cat .env; cat build/ready; } > info.txt\n\
         echo changed > .env\nsleep 1\n",
    );
    let plan = repo.plan(&format!(
        r#"version: 1
repo: repo
defaults:
  agent: {{command: ["{}"]}}
  include: [.env]
  setup:
    - {{run: "mkdir -p build && echo set-up > build/ready"}}
tasks:
  - id: ports
    prompt: Note the ports.
    attempts: 3
    checks:
      - {{name: env, run: "grep -q TOKEN=local-only .env"}}
  - id: broken
    prompt: Never runs.
    setup:
      - {{run: "echo cannot >&2; exit 7"}}
"#,
        agent.display()
    ));
    let before = repo.snapshot();
    let (out, report) = run_with_key(&repo, &plan, &["--workers", "3"]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    let t = task(&report, "ports");
    let mut ports = Vec::new();
    for n in 1..=3 {
        let a = attempt(t, n);
        assert_eq!(a["status"], "succeeded", "the check saw .env again: {a:#}");
        let commit = a["commit"].as_str().expect("a commit");
        let info = repo.show(commit, "info.txt").expect("info.txt");
        let mut lines = info.lines();
        let port_line = lines.next().unwrap();
        assert!(port_line.ends_with("count=20"), "{info}");
        ports.push(port_line.to_owned());
        assert_eq!(lines.next(), Some("TOKEN=local-only"), "{info}");
        assert_eq!(
            lines.next(),
            Some("set-up"),
            "setup ran before the agent: {info}"
        );
        assert_eq!(
            repo.show(commit, ".env"),
            None,
            "the included file is never committed"
        );
        assert!(
            a["contained"]
                .to_string()
                .contains("changed the included file .env"),
            "{a:#}"
        );
    }
    ports.sort();
    ports.dedup();
    assert_eq!(
        ports.len(),
        3,
        "attempts that ran together had the same ports: {ports:?}"
    );
    let broken = attempt(task(&report, "broken"), 1);
    assert_eq!(broken["status"], "failed");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .starts_with("setup `echo cannot >&2; exit 7` exited with code 7"),
        "{broken:#}"
    );
    // The user's .env is the user's.
    assert_eq!(
        std::fs::read_to_string(repo.path.join(".env")).unwrap(),
        "TOKEN=local-only\n"
    );
    repo.assert_untouched(&before);
}

#[test]
fn include_errors_are_located() {
    let repo = TestRepo::init();
    repo.commit(&[("tracked.txt", "x\n")], "tracked");
    let plan = repo.plan(
        r#"version: 1
repo: repo
defaults:
  agent: {command: [true]}
tasks:
  - id: a
    prompt: a
    include: [missing.env, tracked.txt, ../outside]
"#,
    );
    let out = braid_tests::braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", plan.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("plan.yaml:8:14: task \"a\": `include` path \"../outside\" must be relative"),
        "{err}"
    );
    // Once the paths are well formed, each must be an ignored file of the checkout.
    let plan = repo.plan(
        r#"version: 1
repo: repo
defaults:
  agent: {command: [true]}
tasks:
  - id: a
    prompt: a
    include: [missing.env, tracked.txt]
"#,
    );
    let out = braid_tests::braid(
        Path::new(BIN),
        repo.outside(),
        &["validate", plan.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("plan.yaml:8:14: task \"a\": `include` \"missing.env\" does not exist in"),
        "{err}"
    );
    assert!(
        err.contains("plan.yaml:8:14: task \"a\": `include` \"tracked.txt\" is tracked by git"),
        "{err}"
    );
}

#[test]
fn a_cli_that_is_not_installed_is_named_with_its_package() {
    let repo = TestRepo::init();
    // A PATH with braid's own needs and no agent CLI.
    let bin = repo.outside().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["git", "sh", "bwrap", "setsid"] {
        if let Some(found) = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
        {
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
        }
    }
    let plan = repo.plan(
        r#"version: 1
repo: repo
tasks:
  - id: missing
    prompt: Create hello.txt.
    agent: {preset: gemini, base_url: "http://127.0.0.1:9", api_key_env: BRAID_TEST_KEY}
"#,
    );
    let out = command(BIN, repo.outside())
        .args(["run", plan.to_str().unwrap(), "--json"])
        .env("PATH", &bin)
        .env("BRAID_TEST_KEY", KEY)
        .output()
        .expect("braid runs");
    let report: Value = serde_json::from_str(&stdout(&out)).expect("report");
    let a = attempt(task(&report, "missing"), 1);
    assert_eq!(a["status"], "failed", "{a:#}");
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .contains("`gemini` is not installed here (install npm @google/gemini-cli"),
        "{a:#}"
    );
    let agents = command(BIN, repo.outside())
        .args(["agents"])
        .env("PATH", &bin)
        .output()
        .expect("braid agents");
    let text = stdout(&agents);
    assert!(
        text.contains("gemini: `gemini` is not installed (install npm @google/gemini-cli)"),
        "{text}"
    );
}
