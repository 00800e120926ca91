//! [`Loss`]: one loss and its options, chosen by name (serde, or a CLI string), dispatching to
//! the loss functions.

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use foil_core::rng::SplitMix64;
use foil_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::{
    dcl, dclw, info_nce, margin_mse, multi_similarity, mw, soft_info_nce, triplet, Dcl, Dclw,
    InfoNce, LossInput, MarginMse, MultiSimilarity, Mw, SoftInfoNce, Triplet,
};

/// A training loss with its options; serialised as `{"name": "mnrl", "scale": 20.0, …}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Loss {
    /// InfoNCE / MultipleNegativesRanking (`"infonce"` or `"mnrl"`).
    #[serde(rename = "infonce", alias = "mnrl")]
    InfoNce(InfoNce),
    Dcl(Dcl),
    Dclw(Dclw),
    Mw(Mw),
    #[serde(rename = "soft-infonce")]
    SoftInfoNce(SoftInfoNce),
    MultiSimilarity(MultiSimilarity),
    Triplet(Triplet),
    MarginMse(MarginMse),
}

impl Default for Loss {
    fn default() -> Self {
        Loss::InfoNce(InfoNce::default())
    }
}

/// The names [`Loss::from_str`] accepts.
pub const LOSS_NAMES: &[&str] = &[
    "infonce",
    "mnrl",
    "dcl",
    "dclw",
    "mw",
    "soft-infonce",
    "multi-similarity",
    "triplet",
    "margin-mse",
];

impl Loss {
    /// The loss's canonical name.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::InfoNce(_) => "infonce",
            Loss::Dcl(_) => "dcl",
            Loss::Dclw(_) => "dclw",
            Loss::Mw(_) => "mw",
            Loss::SoftInfoNce(_) => "soft-infonce",
            Loss::MultiSimilarity(_) => "multi-similarity",
            Loss::Triplet(_) => "triplet",
            Loss::MarginMse(_) => "margin-mse",
        }
    }

    /// The scalar loss of one batch; `rng` feeds hard-negative mixing (the other losses draw
    /// nothing from it).
    pub fn compute(&self, input: &LossInput, rng: &mut SplitMix64) -> Result<Tensor> {
        match self {
            Loss::InfoNce(o) => info_nce(input, o, rng),
            Loss::Dcl(o) => dcl(input, o, rng),
            Loss::Dclw(o) => dclw(input, o, rng),
            Loss::Mw(o) => mw(input, o),
            Loss::SoftInfoNce(o) => soft_info_nce(input, o, rng),
            Loss::MultiSimilarity(o) => multi_similarity(input, o),
            Loss::Triplet(o) => triplet(input, o),
            Loss::MarginMse(o) => margin_mse(input, o),
        }
    }

    /// Whether the loss needs hard negatives in every batch.
    pub fn needs_negatives(&self) -> bool {
        matches!(self, Loss::Triplet(_) | Loss::MarginMse(_))
    }
}

impl FromStr for Loss {
    type Err = Error;

    /// Parses `name` or `name:key=value,key=value`, e.g. `"mnrl"`,
    /// `"infonce:scale=50,symmetric=true"`, `"triplet:distance=cosine,margin=0.3"`; the keys are
    /// the fields of the loss's options struct.
    fn from_str(s: &str) -> Result<Self> {
        let (name, opts) = s.split_once(':').unwrap_or((s, ""));
        let name = name.trim().to_ascii_lowercase();
        if !LOSS_NAMES.contains(&name.as_str()) {
            return Err(Error::Invalid(format!(
                "unknown loss \"{name}\"; expected one of {}",
                LOSS_NAMES.join(", ")
            )));
        }
        let mut map = serde_json::Map::new();
        map.insert("name".into(), serde_json::Value::String(name.clone()));
        for pair in opts.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                Error::Invalid(format!(
                    "loss option \"{pair}\" is not key=value (in \"{s}\")"
                ))
            })?;
            let value = value.trim();
            let parsed = serde_json::from_str::<serde_json::Value>(value)
                .ok()
                .filter(|v| v.is_number() || v.is_boolean())
                .unwrap_or_else(|| serde_json::Value::String(value.to_string()));
            map.insert(key.trim().replace('-', "_"), parsed);
        }
        serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| Error::Invalid(format!("loss \"{s}\": {e}")))
    }
}

impl fmt::Display for Loss {
    /// The loss as a string [`Loss::from_str`] reads back (every option spelled out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = serde_json::to_value(self).map_err(|_| fmt::Error)?;
        let mut parts = Vec::new();
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                if k == "name" {
                    continue;
                }
                let v = match v {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                parts.push(format!("{k}={v}"));
            }
        }
        write!(f, "{}:{}", self.name(), parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::losses::{Distance, Similarity};

    #[test]
    fn parses_names_and_options() {
        assert_eq!("mnrl".parse::<Loss>().unwrap(), Loss::default());
        assert_eq!("infonce".parse::<Loss>().unwrap(), Loss::default());
        let l: Loss = "infonce:scale=50,symmetric=true,similarity=dot"
            .parse()
            .unwrap();
        assert_eq!(
            l,
            Loss::InfoNce(InfoNce {
                scale: 50.0,
                symmetric: true,
                similarity: Similarity::Dot,
                ..InfoNce::default()
            })
        );
        let t: Loss = "triplet:distance=cosine,margin=0.3".parse().unwrap();
        assert_eq!(
            t,
            Loss::Triplet(Triplet {
                distance: Distance::Cosine,
                margin: 0.3
            })
        );
        for name in LOSS_NAMES {
            let l: Loss = name.parse().unwrap();
            assert_eq!(l.to_string().parse::<Loss>().unwrap(), l, "{name}");
        }
        assert!(matches!(
            "dclw".parse::<Loss>().unwrap(),
            Loss::Dclw(Dclw { sigma, .. }) if sigma == 0.5
        ));
    }

    #[test]
    fn rejects_unknown_names_and_options() {
        let e = "cosent".parse::<Loss>().unwrap_err().to_string();
        assert!(e.contains("unknown loss \"cosent\""), "{e}");
        let e = "mnrl:temperature=0.05"
            .parse::<Loss>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("temperature"), "{e}");
        assert!("mnrl:scale".parse::<Loss>().is_err());
        assert!("triplet:distance=manhattan".parse::<Loss>().is_err());
    }
}
