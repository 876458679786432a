//! aider (PyPI `aider-chat`): `aider --message PROMPT --yes-always --no-auto-commits`.
//!
//! It prints no JSON events. Its analytics log (`--analytics-log`, written even with
//! analytics off) has a `message_send` event per model reply with the prompt and completion
//! tokens and the cost; cache hits appear only in its text report (`Tokens: 1,2k sent, 200
//! cache hit, 50 received.`). Without `--model-metadata-file` it fetches a price list from the
//! internet, so braid writes one for the plan's model.

use serde_json::{Value, json};

use super::{Context, Event, Invocation, Preset, Read};
use braid_shared::usage::Usage;

pub struct Aider;

impl Preset for Aider {
    fn name(&self) -> &'static str {
        "aider"
    }
    fn program(&self) -> &'static str {
        "aider"
    }
    fn package(&self) -> &'static str {
        "PyPI aider-chat"
    }
    fn key_env(&self) -> &'static str {
        "OPENAI_API_KEY"
    }

    fn invocation(&self, cx: &Context<'_>) -> std::io::Result<Invocation> {
        let mut inv = Invocation::default();
        let record = cx.home.join("analytics.jsonl");
        inv.args = [
            "--yes-always",
            "--no-auto-commits",
            "--no-dirty-commits",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-analytics",
            "--no-gitignore",
            "--no-pretty",
            "--no-fancy-input",
            // Streamed replies carry no usage to aider: it would count tokens itself.
            "--no-stream",
        ]
        .map(String::from)
        .to_vec();
        inv.args
            .extend(["--analytics-log".into(), record.to_string_lossy().into()]);
        for (flag, file) in [
            ("--chat-history-file", "chat-history.md"),
            ("--input-history-file", "input-history"),
            ("--llm-history-file", "llm-history.txt"),
        ] {
            inv.args
                .extend([flag.into(), cx.home.join(file).to_string_lossy().into()]);
        }
        let model = cx.model().map(|m| {
            // A custom endpoint speaks OpenAI's API: litellm wants the `openai/` prefix.
            if cx.base_url().is_some() && !m.contains('/') {
                format!("openai/{m}")
            } else {
                m.to_owned()
            }
        });
        if let Some(model) = &model {
            inv.args.extend(["--model".into(), model.clone()]);
            let price = cx.price.unwrap_or(braid_shared::usage::Price {
                input: 0.0,
                cached_input: 0.0,
                output: 0.0,
            });
            let meta = json!({model: {"max_tokens": 8192, "max_input_tokens": 200000,
                "max_output_tokens": 8192, "input_cost_per_token": price.input / 1e6,
                "cache_read_input_token_cost": price.cached_input / 1e6,
                "output_cost_per_token": price.output / 1e6,
                "litellm_provider": "openai", "mode": "chat"}});
            let path = cx.write("model-metadata.json", &meta.to_string())?;
            inv.args.extend([
                "--model-metadata-file".into(),
                path.to_string_lossy().into(),
            ]);
        }
        if let Some(url) = cx.base_url() {
            inv.args.extend(["--openai-api-base".into(), url.into()]);
        }
        if let Some(key) = &cx.key {
            let var = match model.as_deref() {
                Some(m) if m.starts_with("anthropic/") || m.starts_with("claude") => {
                    "ANTHROPIC_API_KEY"
                }
                Some(m) if m.starts_with("gemini") => "GEMINI_API_KEY",
                _ => "OPENAI_API_KEY",
            };
            inv.secrets.push((var.into(), key.clone()));
        }
        inv.args.extend(cx.agent.args.iter().cloned());
        inv.args.extend(["--message".into(), cx.prompt.to_owned()]);
        inv.record = Some(record);
        Ok(inv)
    }

    fn reader(&self) -> Box<dyn Read> {
        Box::new(Reader::default())
    }

    fn litter(&self) -> &'static [&'static str] {
        // The repository map's cache has no option for its place.
        &[".aider.tags.cache.v4", ".aider.tags.cache.v3"]
    }
}

#[derive(Default)]
struct Reader {
    cached: u64,
    seen_cache: bool,
}

/// A count as aider prints it: `950`, `1,234`, `1.2k`, `12k`.
fn aider_count(word: &str) -> Option<u64> {
    let w = word.replace(',', "");
    match w.strip_suffix('k') {
        Some(k) => k.parse::<f64>().ok().map(|v| (v * 1000.0).round() as u64),
        None => w.parse().ok(),
    }
}

impl Read for Reader {
    fn line(&mut self, line: &str) -> Vec<Event> {
        let line = line.trim();
        if let Some(report) = line.strip_prefix("Tokens: ") {
            for part in report.split(", ") {
                if let Some(n) = part.strip_suffix(" cache hit") {
                    self.cached += aider_count(n).unwrap_or(0);
                    self.seen_cache = true;
                }
            }
            return Vec::new();
        }
        if line.contains("litellm.") && line.contains("Error") {
            return vec![Event::Error(line.to_owned())];
        }
        Vec::new()
    }

    fn record(&mut self, content: &str) -> Vec<Event> {
        let mut events = Vec::new();
        for line in content.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["event"] != "message_send" {
                continue;
            }
            let p = &v["properties"];
            events.push(Event::Usage(Usage {
                input: p["prompt_tokens"].as_u64(),
                cached: None,
                output: p["completion_tokens"].as_u64(),
                // aider prices with the metadata braid wrote: 0 when braid knows no price.
                cost: p["cost"].as_f64().filter(|c| *c > 0.0),
                turns: Some(1),
            }));
        }
        if self.seen_cache {
            events.push(Event::Usage(Usage {
                cached: Some(self.cached),
                ..Usage::default()
            }));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_as_aider_prints_them() {
        assert_eq!(aider_count("950"), Some(950));
        assert_eq!(aider_count("1.2k"), Some(1200));
        assert_eq!(aider_count("12k"), Some(12000));
        let mut r = Reader::default();
        r.line(
            "Tokens: 2.2k sent, 900 cache hit, 70 received. Cost: $0.01 message, $0.01 session.",
        );
        let ev = r.record(r#"{"event": "message_send", "properties": {"prompt_tokens": 2200, "completion_tokens": 70, "cost": 0.01}}"#);
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[1],
            Event::Usage(Usage {
                cached: Some(900),
                ..Usage::default()
            })
        );
    }
}
