//! The scripted model server on its own, for trying an agent CLI by hand:
//! `scripted-model [ROOT]` prints its address and logs every request as one JSON line on
//! standard error.
#![allow(clippy::print_stderr)]

use braid_tests::model::{Fault, ModelServer, Script};

fn main() {
    let root = std::env::args().nth(1);
    // SCRIPTED_FAULT: `quota`, `unauthorized`, `rate:TIMES:SECS`, `error:TIMES`.
    let fault = std::env::var("SCRIPTED_FAULT").ok().and_then(|f| {
        let parts: Vec<&str> = f.split(':').collect();
        let n = |i: usize| parts.get(i).and_then(|p| p.parse().ok()).unwrap_or(1);
        match parts[0] {
            "quota" => Some(Fault::QuotaExhausted),
            "unauthorized" => Some(Fault::Unauthorized),
            "rate" => Some(Fault::RateLimited {
                times: n(1),
                secs: n(2),
            }),
            "error" => Some(Fault::ServerError { times: n(1) }),
            _ => None,
        }
    });
    let server = ModelServer::start(Script {
        root,
        fault,
        ..Script::default()
    });
    println!("{}", server.url());
    let mut shown = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let seen = server.seen();
        for s in &seen[shown..] {
            eprintln!(
                "{}",
                serde_json::json!({"target": s.target, "answer": s.answer, "key": s.key, "body": s.body})
            );
        }
        shown = seen.len();
    }
}
