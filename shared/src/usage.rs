//! What an agent spends: tokens, turns and cost, added up over its turns, and the price
//! table braid uses when an agent reports tokens but no cost.

use crate::proto;

/// Token and cost counts. Cached input tokens are part of the input tokens (OpenAI's
/// counting); an agent that counts them apart (Anthropic's) is converted on reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input: Option<u64>,
    /// Of the input tokens, those read from the provider's cache.
    pub cached: Option<u64>,
    /// Output tokens (reasoning included).
    pub output: Option<u64>,
    /// Cost in US dollars.
    pub cost: Option<f64>,
    /// Model turns (requests that answered).
    pub turns: Option<u32>,
}

fn add<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Usage {
    /// The sum of two counts; a count neither reports stays unset.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            input: add(self.input, other.input),
            cached: add(self.cached, other.cached),
            output: add(self.output, other.output),
            cost: add(self.cost, other.cost),
            turns: add(self.turns, other.turns),
        }
    }

    /// Input plus output tokens, where either is known.
    pub fn tokens(&self) -> Option<u64> {
        add(self.input, self.output)
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// The cost from the price table where the agent gave none.
    pub fn priced(mut self, price: Option<Price>) -> Usage {
        if self.cost.is_none()
            && let (Some(price), Some(input)) = (price, self.input)
        {
            let cached = self.cached.unwrap_or(0).min(input);
            let output = self.output.unwrap_or(0);
            self.cost = Some(
                ((input - cached) as f64 * price.input
                    + cached as f64 * price.cached_input
                    + output as f64 * price.output)
                    / 1e6,
            );
        }
        self
    }
}

impl From<&proto::Usage> for Usage {
    fn from(u: &proto::Usage) -> Self {
        Usage {
            input: u.input_tokens,
            cached: u.cached_input_tokens,
            output: u.output_tokens,
            cost: u.cost_usd,
            turns: u.turns,
        }
    }
}

impl From<Usage> for proto::Usage {
    fn from(u: Usage) -> Self {
        proto::Usage {
            input_tokens: u.input,
            cached_input_tokens: u.cached,
            output_tokens: u.output,
            cost_usd: u.cost,
            turns: u.turns,
        }
    }
}

/// US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    /// Input tokens not read from the cache.
    pub input: f64,
    /// Input tokens read from the cache.
    pub cached_input: f64,
    /// Output tokens.
    pub output: f64,
}

/// Prices of well-known models, matched by the longest prefix of the model's name (after any
/// `provider/`). The plan's `price:` overrides them; a model not here has no cost unless the
/// agent reports one.
const PRICES: &[(&str, Price)] = &[
    ("gpt-5-nano", p(0.05, 0.005, 0.40)),
    ("gpt-5-mini", p(0.25, 0.025, 2.00)),
    ("gpt-5", p(1.25, 0.125, 10.00)),
    ("gpt-4.1-nano", p(0.10, 0.025, 0.40)),
    ("gpt-4.1-mini", p(0.40, 0.10, 1.60)),
    ("gpt-4.1", p(2.00, 0.50, 8.00)),
    ("gpt-4o-mini", p(0.15, 0.075, 0.60)),
    ("gpt-4o", p(2.50, 1.25, 10.00)),
    ("o4-mini", p(1.10, 0.275, 4.40)),
    ("o3", p(2.00, 0.50, 8.00)),
    ("codex-mini", p(1.50, 0.375, 6.00)),
    ("claude-opus-4-5", p(5.00, 0.50, 25.00)),
    ("claude-opus-4", p(15.00, 1.50, 75.00)),
    ("claude-sonnet-4", p(3.00, 0.30, 15.00)),
    ("claude-3-7-sonnet", p(3.00, 0.30, 15.00)),
    ("claude-haiku-4", p(1.00, 0.10, 5.00)),
    ("claude-3-5-haiku", p(0.80, 0.08, 4.00)),
    ("gemini-2.5-pro", p(1.25, 0.31, 10.00)),
    ("gemini-2.5-flash-lite", p(0.10, 0.025, 0.40)),
    ("gemini-2.5-flash", p(0.30, 0.075, 2.50)),
];

const fn p(input: f64, cached_input: f64, output: f64) -> Price {
    Price {
        input,
        cached_input,
        output,
    }
}

/// The price of `model` in braid's table.
pub fn price_of(model: &str) -> Option<Price> {
    let name = model.rsplit('/').next().unwrap_or(model);
    PRICES
        .iter()
        .filter(|(prefix, _)| name.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, price)| *price)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_keep_unknowns_unknown() {
        let a = Usage {
            input: Some(10),
            output: Some(2),
            ..Usage::default()
        };
        let b = Usage {
            input: Some(5),
            turns: Some(1),
            ..Usage::default()
        };
        let s = a.plus(b);
        assert_eq!(s.input, Some(15));
        assert_eq!(s.output, Some(2));
        assert_eq!(s.turns, Some(1));
        assert_eq!(s.cached, None);
        assert_eq!(s.cost, None);
    }

    #[test]
    fn priced_by_longest_prefix() {
        assert_eq!(price_of("gpt-5-mini-2025").unwrap().input, 0.25);
        assert_eq!(price_of("openai/gpt-5").unwrap().input, 1.25);
        assert!(price_of("test-model").is_none());
        let u = Usage {
            input: Some(1_000_000),
            cached: Some(500_000),
            output: Some(100_000),
            ..Usage::default()
        }
        .priced(price_of("gpt-5"));
        let cost = u.cost.unwrap();
        assert!((cost - (0.625 + 0.0625 + 1.0)).abs() < 1e-9, "{cost}");
        let reported = Usage {
            cost: Some(0.5),
            input: Some(1),
            ..Usage::default()
        };
        assert_eq!(reported.priced(price_of("gpt-5")).cost, Some(0.5));
    }
}
