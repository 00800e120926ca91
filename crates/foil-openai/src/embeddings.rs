//! [`OpenAiEncoder`]: an [`Encoder`] backed by an OpenAI-compatible `POST /v1/embeddings`
//! (OpenAI and other hosted APIs, text-embeddings-inference, vLLM, llama.cpp's server).
//!
//! Texts are sent in batches of `batch_size`, up to `concurrency` batches at once, each with
//! the query or passage prefix prepended; the answer's `data[].embedding` rows are put back in
//! input order by their `index`, checked for count and dimension, and optionally
//! L2-normalized. Retries and backoff are the [`HttpClient`]'s.

use foil_core::{Embeddings, Encoder, Error, Result, TextKind};
use serde_json::{json, Value};

use crate::client::{ApiConfig, HttpClient};

/// The text sent to learn the vector size when `dimensions` is not given.
const PROBE_TEXT: &str = "foil";

/// What an [`OpenAiEncoder`] asks the server for.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsConfig {
    /// The server, model, key variable, timeout, retries and concurrency.
    pub api: ApiConfig,
    /// Sent as `dimensions` (OpenAI's text-embedding-3, Matryoshka models on vLLM); when
    /// `None`, the server's own size is learned from one probe request at construction.
    pub dimensions: Option<usize>,
    /// Texts per request (default 64).
    pub batch_size: usize,
    /// Prepended to every query (E5: `"query: "`).
    pub query_prefix: String,
    /// Prepended to every passage (E5: `"passage: "`).
    pub passage_prefix: String,
    /// Whether returned vectors are scaled to unit L2 norm (default off).
    pub normalize: bool,
}

impl EmbeddingsConfig {
    /// A config with the defaults for everything but the server and the model.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            api: ApiConfig::new(base_url, model),
            dimensions: None,
            batch_size: 64,
            query_prefix: String::new(),
            passage_prefix: String::new(),
            normalize: false,
        }
    }
}

/// An [`Encoder`] that asks an OpenAI-compatible server for embeddings.
#[derive(Debug)]
pub struct OpenAiEncoder {
    client: HttpClient,
    config: EmbeddingsConfig,
    dim: usize,
    name: String,
}

impl OpenAiEncoder {
    /// Builds the encoder. When `config.dimensions` is `None` this sends one probe request
    /// to learn the vector size; otherwise it touches no network.
    pub fn new(config: EmbeddingsConfig) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(Error::Invalid("the batch size must be at least 1".into()));
        }
        if config.dimensions == Some(0) {
            return Err(Error::Invalid("dimensions must be at least 1".into()));
        }
        let client = HttpClient::new(config.api.clone())?;
        let name = format!("openai:{}", config.api.model);
        let mut encoder = Self {
            client,
            dim: config.dimensions.unwrap_or(0),
            config,
            name,
        };
        if encoder.dim == 0 {
            let probe = format!("{}{PROBE_TEXT}", encoder.config.passage_prefix);
            let (dim, _) = encoder.request(&[probe], None, "embeddings probe")?;
            encoder.dim = dim;
            tracing::debug!(model = %encoder.config.api.model, dim, "learned the embedding size");
        }
        Ok(encoder)
    }

    /// The config the encoder was built from.
    pub fn config(&self) -> &EmbeddingsConfig {
        &self.config
    }

    /// The HTTP client (to share its settings or inspect them).
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    /// One request for `inputs`: the dimension and the row-major vectors in input order.
    fn request(
        &self,
        inputs: &[String],
        expected_dim: Option<usize>,
        what: &str,
    ) -> Result<(usize, Vec<f32>)> {
        let mut body = json!({ "model": self.config.api.model, "input": inputs });
        if let Some(dimensions) = self.config.dimensions {
            body["dimensions"] = json!(dimensions);
        }
        self.client
            .post_json_with("embeddings", &body, what, |answer| {
                parse_embeddings(&answer, inputs.len(), expected_dim)
            })
    }
}

impl Encoder for OpenAiEncoder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn fingerprint(&self) -> String {
        let dimensions = match self.config.dimensions {
            Some(d) => d.to_string(),
            None => format!("native({})", self.dim),
        };
        format!(
            "openai:{}|model={}|dimensions={dimensions}|query_prefix={}|passage_prefix={}|normalize={}",
            self.client.base_url(),
            Value::String(self.config.api.model.clone()),
            Value::String(self.config.query_prefix.clone()),
            Value::String(self.config.passage_prefix.clone()),
            self.config.normalize,
        )
    }

    fn encode(&self, texts: &[&str], kind: TextKind) -> Result<Embeddings> {
        if texts.is_empty() {
            return Ok(Embeddings::new(self.dim));
        }
        let prefix = match kind {
            TextKind::Query => &self.config.query_prefix,
            TextKind::Passage => &self.config.passage_prefix,
        };
        let size = self.config.batch_size;
        let batches = texts.len().div_ceil(size);
        let parts = self.client.run_concurrent(batches, |b| {
            let start = b * size;
            let end = (start + size).min(texts.len());
            let inputs: Vec<String> = texts[start..end]
                .iter()
                .map(|text| format!("{prefix}{text}"))
                .collect();
            let what = format!(
                "embeddings batch {} of {batches} (texts {start}..{end})",
                b + 1
            );
            self.request(&inputs, Some(self.dim), &what)
                .map(|(_, rows)| rows)
        })?;
        let mut data = Vec::with_capacity(texts.len() * self.dim);
        for part in parts {
            data.extend(part);
        }
        if self.config.normalize {
            for row in data.chunks_exact_mut(self.dim) {
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|x| *x /= norm);
                }
            }
        }
        Ok(Embeddings::from_vec(self.dim, data))
    }
}

/// Reads `{"data": [{"index", "embedding"}, …]}` holding `n` vectors (of `expected_dim`
/// numbers, when given) into row-major data in `index` order. Items without `index` (all of
/// them) are taken in array order.
fn parse_embeddings(
    answer: &Value,
    n: usize,
    expected_dim: Option<usize>,
) -> std::result::Result<(usize, Vec<f32>), String> {
    let Some(data) = answer.get("data").and_then(Value::as_array) else {
        return Err(match answer {
            Value::Object(map) if map.contains_key("data") => {
                "the answer's \"data\" is not an array".to_string()
            }
            Value::Object(map) => format!(
                "the answer has no \"data\" array (keys: {})",
                map.keys()
                    .map(|k| Value::String(k.clone()).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "the answer is not a JSON object".to_string(),
        });
    };
    if data.len() != n {
        return Err(format!(
            "the answer holds {} embeddings for {n} inputs",
            data.len()
        ));
    }
    let with_index = data
        .iter()
        .filter(|item| item.get("index").is_some())
        .count();
    if with_index != 0 && with_index != n {
        return Err(format!(
            "{with_index} of {n} items of \"data\" have an \"index\""
        ));
    }
    let mut dim = expected_dim;
    let mut rows: Vec<Option<Vec<f32>>> = vec![None; n];
    for (position, item) in data.iter().enumerate() {
        let index = match item.get("index") {
            None => position,
            Some(index) => match index.as_u64() {
                Some(i) if (i as usize) < n => i as usize,
                _ => {
                    return Err(format!(
                        "data[{position}] has index {index}, outside 0..{n}"
                    ))
                }
            },
        };
        if rows[index].is_some() {
            return Err(format!("index {index} appears twice in \"data\""));
        }
        let values = match item.get("embedding") {
            Some(Value::Array(values)) => values,
            Some(Value::String(_)) => {
                return Err(format!(
                    "data[{position}].embedding is a string (base64?), not an array of numbers"
                ))
            }
            _ => return Err(format!("data[{position}] has no \"embedding\" array")),
        };
        let want = *dim.get_or_insert(values.len());
        if values.len() != want || want == 0 {
            return Err(format!(
                "data[{position}].embedding has {} dimensions, expected {want}",
                values.len()
            ));
        }
        let row = values
            .iter()
            .map(|v| v.as_f64().map(|x| x as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| format!("data[{position}].embedding holds something not a number"))?;
        rows[index] = Some(row);
    }
    let dim = dim.unwrap_or(0);
    let mut out = Vec::with_capacity(n * dim);
    for row in rows.into_iter().flatten() {
        out.extend(row);
    }
    Ok((dim, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_put_in_index_order() {
        let answer = json!({"data": [
            {"index": 1, "embedding": [3.0, 4.0]},
            {"index": 0, "embedding": [1.0, 2.0]},
        ]});
        assert_eq!(
            parse_embeddings(&answer, 2, None).unwrap(),
            (2, vec![1.0, 2.0, 3.0, 4.0])
        );
        let no_index = json!({"data": [{"embedding": [1.0]}, {"embedding": [2.0]}]});
        assert_eq!(
            parse_embeddings(&no_index, 2, Some(1)).unwrap(),
            (1, vec![1.0, 2.0])
        );
    }

    #[test]
    fn bad_answers_are_described() {
        let cases = [
            (
                json!({"object": "list"}),
                "no \"data\" array (keys: \"object\")",
            ),
            (json!([1, 2]), "not a JSON object"),
            (
                json!({"data": [{"index": 0, "embedding": [1.0]}]}),
                "holds 1 embeddings for 2 inputs",
            ),
            (
                json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]}),
                "index 0 appears twice",
            ),
            (
                json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 5, "embedding": [2.0]}]}),
                "index 5, outside 0..2",
            ),
            (
                json!({"data": [{"index": 0, "embedding": [1.0]}, {"embedding": [2.0]}]}),
                "1 of 2 items",
            ),
            (
                json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [2.0, 3.0]}]}),
                "data[1].embedding has 2 dimensions, expected 1",
            ),
            (
                json!({"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": [2.0]}]}),
                "is a string",
            ),
            (
                json!({"data": [{"index": 0, "embedding": [null]}, {"index": 1, "embedding": [2.0]}]}),
                "not a number",
            ),
        ];
        for (answer, expected) in cases {
            let err = parse_embeddings(&answer, 2, None).unwrap_err();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        let err = parse_embeddings(
            &json!({"data": [{"index": 0, "embedding": [1.0]}]}),
            1,
            Some(3),
        )
        .unwrap_err();
        assert!(err.contains("has 1 dimensions, expected 3"), "{err}");
    }
}
