//! [`OpenAiChat`]: a [`Generator`] over an OpenAI-compatible `/v1/chat/completions` server
//! (vLLM, llama.cpp's server, TGI, Ollama, hosted APIs), one HTTP request per chat.
//!
//! Each request carries its own `temperature`, `top_p`, `max_tokens`, `stop` and `seed`, so a
//! request's answer does not depend on its batch. Requests run concurrently on the shared
//! [`HttpClient`] (retries with backoff and jitter on 408/429/5xx, `Retry-After`, timeouts);
//! a request that still fails becomes that request's [`GenerateError`] and the others go on.
//!
//! The answer is read strictly: `choices` must be a non-empty array whose first element has a
//! `message.content` string and a `finish_reason` of `stop` (also `eos`, `end_turn`,
//! `stop_sequence`, as some servers say) or `length`; `usage`, when present, must hold
//! non-negative integer `prompt_tokens` and `completion_tokens` (absent: both 0). Anything else,
//! and a body that is not JSON, is retried a few times and then fails with reason
//! `bad_response`.

use foil_core::{
    Error, FinishReason, GenerateError, Generation, GenerationRequest, Generator, Result, Role,
    TokenLogprob,
};
use serde_json::{json, Map, Value};

use crate::client::{ApiConfig, HttpClient};

/// A [`Generator`] that asks an OpenAI-compatible server for chat completions.
#[derive(Debug)]
pub struct OpenAiChat {
    client: HttpClient,
    name: String,
}

impl OpenAiChat {
    /// Builds the generator (reading the API key from the environment variable the config
    /// names); touches no network.
    pub fn new(config: ApiConfig) -> Result<Self> {
        let name = format!("openai:{}", config.model);
        Ok(Self {
            client: HttpClient::new(config)?,
            name,
        })
    }

    /// The HTTP client (to inspect its settings).
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// One request, retried by the client; its failure described by a short reason.
    fn complete(
        &self,
        request: &GenerationRequest,
        what: &str,
    ) -> Result<Generation, GenerateError> {
        if request.messages.is_empty() {
            return Err(GenerateError::new(
                "bad_request",
                format!("{what}: no messages"),
            ));
        }
        let body = request_body(&self.client.config().model, request);
        self.client
            .post_json_with("chat/completions", &body, what, parse_chat)
            .map_err(|e| classify(&e))
    }
}

impl Generator for OpenAiChat {
    fn name(&self) -> &str {
        &self.name
    }

    fn fingerprint(&self) -> String {
        format!(
            "openai-chat:{}|model={}",
            self.client.base_url(),
            Value::String(self.client.config().model.clone())
        )
    }

    fn generate(&self, requests: &[GenerationRequest]) -> Vec<Result<Generation, GenerateError>> {
        let n = requests.len();
        // Every job succeeds as far as `run_concurrent` can tell, so one failed request never
        // stops the others.
        let results = self.client.run_concurrent(n, |i| {
            let what = format!("chat request {} of {n}", i + 1);
            Ok(self.complete(&requests[i], &what))
        });
        match results {
            Ok(results) => results,
            Err(e) => {
                let failure = classify(&e);
                (0..n).map(|_| Err(failure.clone())).collect()
            }
        }
    }
}

/// The JSON body of one chat request.
pub fn request_body(model: &str, request: &GenerationRequest) -> Value {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": m.content})
        })
        .collect();
    let p = &request.params;
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("temperature".into(), json!(decimal(p.temperature)));
    body.insert("top_p".into(), json!(decimal(p.top_p)));
    body.insert("max_tokens".into(), json!(p.max_tokens));
    if !p.stop.is_empty() {
        body.insert("stop".into(), json!(p.stop));
    }
    body.insert("seed".into(), json!(p.seed));
    if p.logprobs || p.top_logprobs > 0 {
        body.insert("logprobs".into(), json!(true));
    }
    if p.top_logprobs > 0 {
        // OpenAI accepts at most 20.
        body.insert("top_logprobs".into(), json!(p.top_logprobs.min(20)));
    }
    body.insert("n".into(), json!(1));
    body.insert("stream".into(), json!(false));
    Value::Object(body)
}

/// `x` as the f64 of its shortest decimal form, so that 0.7f32 is sent as `0.7`, not
/// `0.699999988079071`.
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// Reads a chat completion answer strictly (see the module documentation).
pub fn parse_chat(answer: Value) -> std::result::Result<Generation, String> {
    let Value::Object(map) = &answer else {
        return Err("the answer is not a JSON object".into());
    };
    let choices = match map.get("choices") {
        Some(Value::Array(choices)) => choices,
        Some(_) => return Err("the answer's \"choices\" is not an array".into()),
        None => {
            return Err(format!(
                "the answer has no \"choices\" array (keys: {})",
                map.keys()
                    .map(|k| Value::String(k.clone()).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let Some(choice) = choices.first() else {
        return Err("the answer's \"choices\" is empty".into());
    };
    let text = match choice.pointer("/message/content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => {
            return Err("choices[0] has no \"message.content\" string".into())
        }
        Some(other) => {
            return Err(format!(
                "choices[0].message.content is not a string: {}",
                excerpt(&other.to_string())
            ))
        }
    };
    let finish = match choice.get("finish_reason") {
        Some(Value::String(reason)) => match reason.as_str() {
            "stop" | "eos" | "end_turn" | "stop_sequence" => FinishReason::Stop,
            "length" | "max_tokens" => FinishReason::Length,
            other => {
                return Err(format!(
                    "choices[0].finish_reason is {}, neither \"stop\" nor \"length\"",
                    Value::String(excerpt(other))
                ))
            }
        },
        _ => return Err("choices[0] has no \"finish_reason\" string".into()),
    };
    let (prompt_tokens, completion_tokens) = match map.get("usage") {
        None | Some(Value::Null) => (0, 0),
        Some(Value::Object(usage)) => {
            let count = |field: &str| -> std::result::Result<usize, String> {
                match usage.get(field) {
                    None | Some(Value::Null) => Ok(0),
                    Some(v) => v
                        .as_u64()
                        .map(|n| n as usize)
                        .ok_or_else(|| format!("usage.{field} is not a non-negative integer: {v}")),
                }
            };
            (count("prompt_tokens")?, count("completion_tokens")?)
        }
        Some(_) => return Err("the answer's \"usage\" is not an object".into()),
    };
    let (mean_logprob, top_logprobs) = logprobs(choice)?;
    Ok(Generation {
        text,
        finish,
        prompt_tokens,
        completion_tokens,
        mean_logprob,
        top_logprobs,
    })
}

/// `choices[0].logprobs.content` when the server sent it: the mean of its tokens' `logprob`,
/// and the first token's `top_logprobs`.
fn logprobs(choice: &Value) -> std::result::Result<(Option<f64>, Vec<TokenLogprob>), String> {
    let content = match choice.pointer("/logprobs/content") {
        None | Some(Value::Null) => return Ok((None, Vec::new())),
        Some(Value::Array(content)) => content,
        Some(_) => return Err("choices[0].logprobs.content is not an array".into()),
    };
    let token_logprob = |v: &Value, at: &str| -> std::result::Result<TokenLogprob, String> {
        let token = v.get("token").and_then(Value::as_str);
        let logprob = v.get("logprob").and_then(Value::as_f64);
        match (token, logprob) {
            (Some(token), Some(logprob)) => Ok(TokenLogprob {
                token: token.to_string(),
                logprob: logprob as f32,
            }),
            _ => Err(format!(
                "{at} lacks a \"token\" string or a \"logprob\" number"
            )),
        }
    };
    let mut sum = 0.0;
    for (i, v) in content.iter().enumerate() {
        sum += token_logprob(v, &format!("choices[0].logprobs.content[{i}]"))?.logprob as f64;
    }
    let mean = (!content.is_empty()).then(|| sum / content.len() as f64);
    let top = match content.first().and_then(|c| c.get("top_logprobs")) {
        Some(Value::Array(top)) => top
            .iter()
            .enumerate()
            .map(|(i, v)| {
                token_logprob(
                    v,
                    &format!("choices[0].logprobs.content[0].top_logprobs[{i}]"),
                )
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    Ok((mean, top))
}

/// A short reason for a request that failed for good, read from the client's error, whose
/// message (already scrubbed of the key) becomes the [`GenerateError`]'s message:
/// `bad_response` (not JSON, or not in the schema), `http_<code>`, `timeout`, `connection`,
/// or `request_failed`.
pub fn classify(error: &Error) -> GenerateError {
    let message = error.to_string();
    let last = message
        .rsplit_once("; invalid response: ")
        .map(|(_, rest)| ("bad_response".to_string(), rest))
        .or_else(|| {
            message
                .rsplit_once("; last error: ")
                .map(|(_, rest)| (String::new(), rest))
        })
        .or_else(|| {
            message
                .rsplit_once(" failed: ")
                .map(|(_, rest)| (String::new(), rest))
        });
    let reason = match last {
        Some((reason, _)) if !reason.is_empty() => reason,
        Some((_, rest)) => {
            if let Some(code) = rest
                .strip_prefix("server answered ")
                .and_then(|r| r.split_whitespace().next())
                .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
            {
                format!("http_{code}")
            } else if rest.starts_with("no complete answer within") {
                "timeout".into()
            } else if rest.starts_with("connection error") {
                "connection".into()
            } else {
                "request_failed".into()
            }
        }
        None => "request_failed".into(),
    };
    GenerateError::new(reason, message)
}

/// At most 200 characters of `text`, on one line.
fn excerpt(text: &str) -> String {
    foil_core::skip::excerpt(text, 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foil_core::{ChatMessage, SamplingParams};

    #[test]
    fn logprobs_are_asked_for_and_read() {
        let mut request = GenerationRequest {
            messages: vec![ChatMessage::user("hi")],
            params: SamplingParams {
                top_logprobs: 40,
                ..Default::default()
            },
        };
        let body = request_body("m", &request);
        assert_eq!(
            (body["logprobs"].clone(), body["top_logprobs"].clone()),
            (json!(true), json!(20))
        );
        request.params.top_logprobs = 0;
        assert!(request_body("m", &request).get("logprobs").is_none());
        request.params.logprobs = true;
        assert_eq!(request_body("m", &request)["logprobs"], true);
        assert!(request_body("m", &request).get("top_logprobs").is_none());

        let answer = json!({"choices": [{"message": {"content": "Yes it is"}, "finish_reason": "stop",
            "logprobs": {"content": [
                {"token": "Yes", "logprob": -0.5, "top_logprobs": [{"token": "Yes", "logprob": -0.5}, {"token": "No", "logprob": -1.0}]},
                {"token": " it", "logprob": -1.5, "top_logprobs": []},
                {"token": " is", "logprob": -1.0}]}}]});
        let g = parse_chat(answer).unwrap();
        assert_eq!(g.mean_logprob, Some(-1.0));
        assert_eq!(g.top_logprobs.len(), 2);
        assert_eq!(
            (g.top_logprobs[1].token.as_str(), g.top_logprobs[1].logprob),
            ("No", -1.0)
        );
        let bad = json!({"choices": [{"message": {"content": "x"}, "finish_reason": "stop",
            "logprobs": {"content": [{"token": "x"}]}}]});
        assert!(parse_chat(bad).unwrap_err().contains("logprob"));
    }

    #[test]
    fn the_body_carries_every_sampling_parameter() {
        let request = GenerationRequest {
            messages: vec![ChatMessage::system("be brief"), ChatMessage::user("hi")],
            params: SamplingParams {
                temperature: 0.5,
                top_p: 0.25,
                max_tokens: 17,
                stop: vec!["\n".into()],
                seed: 99,
                ..Default::default()
            },
        };
        let body = request_body("m", &request);
        assert_eq!(body["model"], "m");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(body["messages"][1]["role"], "user");
        assert_eq!(body["temperature"], 0.5);
        assert_eq!(body["top_p"], 0.25);
        assert_eq!(body["max_tokens"], 17);
        assert_eq!(body["stop"], json!(["\n"]));
        assert_eq!(body["seed"], 99);
    }

    #[test]
    fn good_answers_are_read() {
        let answer = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "q"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}});
        let g = parse_chat(answer).unwrap();
        assert_eq!(
            (
                g.text.as_str(),
                g.finish,
                g.prompt_tokens,
                g.completion_tokens
            ),
            ("q", FinishReason::Length, 12, 3)
        );
        let no_usage = json!({"choices": [{"message": {"content": ""}, "finish_reason": "stop"}]});
        assert_eq!(parse_chat(no_usage).unwrap().prompt_tokens, 0);
    }

    #[test]
    fn bad_answers_are_described() {
        let cases = [
            (json!([1]), "not a JSON object"),
            (json!({"data": []}), "no \"choices\" array (keys: \"data\")"),
            (json!({"choices": {}}), "not an array"),
            (json!({"choices": []}), "is empty"),
            (
                json!({"choices": [{"message": {"content": null}, "finish_reason": "stop"}]}),
                "no \"message.content\"",
            ),
            (
                json!({"choices": [{"message": {"content": 5}, "finish_reason": "stop"}]}),
                "not a string: 5",
            ),
            (
                json!({"choices": [{"message": {"content": "x"}}]}),
                "no \"finish_reason\"",
            ),
            (
                json!({"choices": [{"message": {"content": "x"}, "finish_reason": "tool_calls"}]}),
                "\"tool_calls\"",
            ),
            (
                json!({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": -1}}),
                "usage.prompt_tokens",
            ),
            (
                json!({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}], "usage": 3}),
                "\"usage\" is not an object",
            ),
        ];
        for (answer, expected) in cases {
            let err = parse_chat(answer).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }

    #[test]
    fn failures_get_short_reasons() {
        let cases = [
            ("chat request 1 of 2: POST http://x/v1/chat/completions gave up after 3 attempts; invalid response: the answer is not valid JSON", "bad_response"),
            ("chat request 1 of 2: POST http://x/v1/chat/completions gave up after 6 attempts; last error: server answered 500 Internal Server Error: \"boom\"", "http_500"),
            ("chat request 1 of 2: POST http://x/v1/chat/completions gave up after 6 attempts; last error: no complete answer within 1 s", "timeout"),
            ("chat request 1 of 2: POST http://x/v1/chat/completions gave up after 6 attempts; last error: connection error: refused", "connection"),
            ("chat request 1 of 2: POST http://x/v1/chat/completions failed: server answered 401 Unauthorized", "http_401"),
            ("something else", "request_failed"),
        ];
        for (message, reason) in cases {
            let e = classify(&Error::Invalid(message.into()));
            assert_eq!(e.reason, reason, "{message}");
            assert_eq!(e.message, message);
        }
    }
}
