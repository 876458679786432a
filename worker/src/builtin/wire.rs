//! The three wire formats the built-in agent speaks, streaming with SSE: OpenAI Responses,
//! OpenAI Chat Completions, Anthropic Messages. Each turns one conversation into a request
//! and one streamed reply into text, tool calls and usage.

use braid_shared::usage::Usage;
use serde_json::{Value, json};

use super::tools::Tool;

/// The wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Responses,
    Chat,
    Anthropic,
}

impl Api {
    /// The API a plan names.
    pub fn named(name: &str) -> Option<Api> {
        match name {
            "responses" => Some(Api::Responses),
            "chat" => Some(Api::Chat),
            "anthropic" => Some(Api::Anthropic),
            _ => None,
        }
    }

    /// The endpoint when the plan names none.
    pub fn default_base(self) -> &'static str {
        match self {
            Api::Responses | Api::Chat => "https://api.openai.com/v1",
            Api::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The variable that holds the key when the plan names none.
    pub fn default_key_env(self) -> &'static str {
        match self {
            Api::Responses | Api::Chat => "OPENAI_API_KEY",
            Api::Anthropic => "ANTHROPIC_API_KEY",
        }
    }

    /// Where requests go under `base`.
    pub fn url(self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            Api::Responses => format!("{base}/responses"),
            Api::Chat => format!("{base}/chat/completions"),
            Api::Anthropic => format!("{base}/v1/messages"),
        }
    }
}

/// A tool call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub args: Value,
}

/// One entry of the conversation.
#[derive(Debug, Clone)]
pub enum Item {
    User(String),
    Assistant { text: String, calls: Vec<Call> },
    Results(Vec<(Call, String)>),
}

/// A model's reply, as it streamed in.
#[derive(Debug, Default, Clone)]
pub struct Reply {
    pub text: String,
    pub calls: Vec<Call>,
    pub usage: Usage,
    /// An error the stream itself carried.
    pub error: Option<String>,
}

/// The request body for `items`.
pub fn request(api: Api, model: &str, system: &str, items: &[Item], tools: &[Tool]) -> Value {
    match api {
        Api::Responses => {
            let mut input = Vec::new();
            for item in items {
                match item {
                    Item::User(text) => input.push(
                        json!({"role": "user", "content": [{"type": "input_text", "text": text}]}),
                    ),
                    Item::Assistant { text, calls } => {
                        if !text.is_empty() {
                            input.push(json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}));
                        }
                        for c in calls {
                            input.push(json!({"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.args.to_string()}));
                        }
                    }
                    Item::Results(results) => {
                        for (c, out) in results {
                            input.push(json!({"type": "function_call_output", "call_id": c.id, "output": out}));
                        }
                    }
                }
            }
            json!({"model": model, "instructions": system, "input": input, "stream": true, "store": false,
                "tools": tools.iter().map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters})).collect::<Vec<_>>()})
        }
        Api::Chat => {
            let mut messages = vec![json!({"role": "system", "content": system})];
            for item in items {
                match item {
                    Item::User(text) => messages.push(json!({"role": "user", "content": text})),
                    Item::Assistant { text, calls } => {
                        let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                        if !calls.is_empty() {
                            m["tool_calls"] = calls.iter().map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.args.to_string()}})).collect();
                        }
                        messages.push(m);
                    }
                    Item::Results(results) => {
                        for (c, out) in results {
                            messages.push(
                                json!({"role": "tool", "tool_call_id": c.id, "content": out}),
                            );
                        }
                    }
                }
            }
            json!({"model": model, "messages": messages, "stream": true, "stream_options": {"include_usage": true},
                "tools": tools.iter().map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}})).collect::<Vec<_>>()})
        }
        Api::Anthropic => {
            let mut messages = Vec::new();
            for item in items {
                match item {
                    Item::User(text) => messages.push(json!({"role": "user", "content": [{"type": "text", "text": text}]})),
                    Item::Assistant { text, calls } => {
                        let mut content = Vec::new();
                        if !text.is_empty() {
                            content.push(json!({"type": "text", "text": text}));
                        }
                        for c in calls {
                            content.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.args}));
                        }
                        messages.push(json!({"role": "assistant", "content": content}));
                    }
                    Item::Results(results) => messages.push(json!({"role": "user", "content": results.iter().map(|(c, out)| json!({"type": "tool_result", "tool_use_id": c.id, "content": out})).collect::<Vec<_>>()})),
                }
            }
            json!({"model": model, "system": system, "messages": messages, "max_tokens": 8192, "stream": true,
                "tools": tools.iter().map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters})).collect::<Vec<_>>()})
        }
    }
}

/// Reads one reply's stream event by event.
#[derive(Debug)]
pub struct Reader {
    api: Api,
    reply: Reply,
    /// Tool calls being streamed, by index: id, name, argument text.
    partial: Vec<(String, String, String)>,
}

impl Reader {
    pub fn new(api: Api) -> Self {
        Reader {
            api,
            reply: Reply::default(),
            partial: Vec::new(),
        }
    }

    /// Takes one event's data.
    pub fn event(&mut self, data: &str) {
        if data.trim() == "[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match self.api {
            Api::Responses => self.responses(&v),
            Api::Chat => self.chat(&v),
            Api::Anthropic => self.anthropic(&v),
        }
    }

    fn slot(&mut self, index: usize) -> &mut (String, String, String) {
        while self.partial.len() <= index {
            self.partial.push(Default::default());
        }
        &mut self.partial[index]
    }

    fn responses(&mut self, v: &Value) {
        match v["type"].as_str().unwrap_or_default() {
            "response.output_text.delta" => self
                .reply
                .text
                .push_str(v["delta"].as_str().unwrap_or_default()),
            "response.output_item.done" => {
                let item = &v["item"];
                if item["type"] == "function_call" {
                    self.reply.calls.push(Call {
                        id: item["call_id"].as_str().unwrap_or_default().into(),
                        name: item["name"].as_str().unwrap_or_default().into(),
                        args: parse_args(item["arguments"].as_str().unwrap_or("{}")),
                    });
                } else if item["type"] == "message" && self.reply.text.is_empty() {
                    for part in item["content"].as_array().into_iter().flatten() {
                        self.reply
                            .text
                            .push_str(part["text"].as_str().unwrap_or_default());
                    }
                }
            }
            "response.completed" | "response.incomplete" => {
                let u = &v["response"]["usage"];
                self.reply.usage = Usage {
                    input: u["input_tokens"].as_u64(),
                    cached: u["input_tokens_details"]["cached_tokens"].as_u64(),
                    output: u["output_tokens"].as_u64(),
                    cost: None,
                    turns: Some(1),
                };
            }
            "response.failed" => {
                self.reply.error = Some(
                    v["response"]["error"]["message"]
                        .as_str()
                        .unwrap_or("the response failed")
                        .into(),
                )
            }
            "error" => {
                self.reply.error = Some(
                    v["message"]
                        .as_str()
                        .or(v["error"]["message"].as_str())
                        .unwrap_or("an error")
                        .into(),
                )
            }
            _ => {}
        }
    }

    fn chat(&mut self, v: &Value) {
        if let Some(error) = v["error"]["message"].as_str() {
            self.reply.error = Some(error.into());
        }
        for choice in v["choices"].as_array().into_iter().flatten() {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str() {
                self.reply.text.push_str(text);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().unwrap_or(0) as usize;
                let slot = self.slot(index);
                if let Some(id) = call["id"].as_str() {
                    slot.0 = id.into();
                }
                if let Some(name) = call["function"]["name"].as_str() {
                    slot.1.push_str(name);
                }
                if let Some(args) = call["function"]["arguments"].as_str() {
                    slot.2.push_str(args);
                }
            }
        }
        let u = &v["usage"];
        if u.is_object() {
            self.reply.usage = Usage {
                input: u["prompt_tokens"].as_u64(),
                cached: u["prompt_tokens_details"]["cached_tokens"].as_u64(),
                output: u["completion_tokens"].as_u64(),
                cost: None,
                turns: Some(1),
            };
        }
    }

    fn anthropic(&mut self, v: &Value) {
        match v["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let u = &v["message"]["usage"];
                let fresh = u["input_tokens"].as_u64().unwrap_or(0);
                let read = u["cache_read_input_tokens"].as_u64().unwrap_or(0);
                let made = u["cache_creation_input_tokens"].as_u64().unwrap_or(0);
                self.reply.usage = Usage {
                    input: Some(fresh + read + made),
                    cached: Some(read),
                    output: u["output_tokens"].as_u64(),
                    cost: None,
                    turns: Some(1),
                };
            }
            "content_block_start" => {
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    let index = v["index"].as_u64().unwrap_or(0) as usize;
                    let slot = self.slot(index);
                    slot.0 = block["id"].as_str().unwrap_or_default().into();
                    slot.1 = block["name"].as_str().unwrap_or_default().into();
                }
            }
            "content_block_delta" => {
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => self
                        .reply
                        .text
                        .push_str(delta["text"].as_str().unwrap_or_default()),
                    Some("input_json_delta") => {
                        let index = v["index"].as_u64().unwrap_or(0) as usize;
                        let part = delta["partial_json"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        self.slot(index).2.push_str(&part);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(out) = v["usage"]["output_tokens"].as_u64() {
                    self.reply.usage.output = Some(out);
                }
            }
            "error" => {
                self.reply.error = Some(v["error"]["message"].as_str().unwrap_or("an error").into())
            }
            _ => {}
        }
    }

    /// Takes a reply that came whole, not streamed.
    pub fn whole(&mut self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            self.reply.error = Some(format!(
                "the model's answer is not JSON: {}",
                crate::presets::cut(text, 200)
            ));
            return;
        };
        match self.api {
            Api::Responses => {
                for item in v["output"].as_array().into_iter().flatten() {
                    self.responses(&json!({"type": "response.output_item.done", "item": item}));
                }
                self.responses(&json!({"type": "response.completed", "response": v}));
            }
            Api::Chat => {
                let message = &v["choices"][0]["message"];
                let mut delta = message.clone();
                if let Some(calls) = delta["tool_calls"].as_array_mut() {
                    for (i, c) in calls.iter_mut().enumerate() {
                        c["index"] = json!(i);
                    }
                }
                self.chat(&json!({"choices": [{"delta": delta}], "usage": v["usage"]}));
            }
            Api::Anthropic => {
                self.anthropic(&json!({"type": "message_start", "message": {"usage": v["usage"]}}));
                for (i, block) in v["content"].as_array().into_iter().flatten().enumerate() {
                    match block["type"].as_str() {
                        Some("text") => self
                            .reply
                            .text
                            .push_str(block["text"].as_str().unwrap_or_default()),
                        Some("tool_use") => {
                            let slot = self.slot(i);
                            slot.0 = block["id"].as_str().unwrap_or_default().into();
                            slot.1 = block["name"].as_str().unwrap_or_default().into();
                            slot.2 = block["input"].to_string();
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The reply, once the stream ended.
    pub fn finish(mut self) -> Reply {
        for (id, name, args) in std::mem::take(&mut self.partial) {
            if name.is_empty() {
                continue;
            }
            self.reply.calls.push(Call {
                id,
                name,
                args: parse_args(if args.trim().is_empty() { "{}" } else { &args }),
            });
        }
        self.reply
    }
}

fn parse_args(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({"_unparsed": text}))
}

/// Splits SSE text into the data of complete events; keeps an unfinished tail in `buf`.
pub fn events(buf: &mut String) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let normalized = buf.replace("\r\n", "\n");
        if normalized.len() != buf.len() {
            *buf = normalized;
        }
        let Some(end) = buf.find("\n\n") else { break };
        let block: String = buf.drain(..end + 2).collect();
        let data: Vec<&str> = block
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if !data.is_empty() {
            out.push(data.join("\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut buf = String::from("event: a\ndata: {\"x\":1}\n\nda");
        assert_eq!(events(&mut buf), vec!["{\"x\":1}".to_owned()]);
        buf.push_str("ta: [DONE]\n\n");
        assert_eq!(events(&mut buf), vec!["[DONE]".to_owned()]);
        assert!(buf.is_empty());
    }

    #[test]
    fn chat_tool_calls_are_assembled() {
        let mut r = Reader::new(Api::Chat);
        r.event(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"shell","arguments":"{\"comm"}}]}}]}"#);
        r.event(r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"and\":\"ls\"}"}}]}}]}"#);
        r.event(r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#);
        let reply = r.finish();
        assert_eq!(reply.calls[0].name, "shell");
        assert_eq!(reply.calls[0].args, json!({"command": "ls"}));
        assert_eq!(reply.usage.input, Some(10));
        assert_eq!(reply.usage.cached, Some(4));
    }
}
