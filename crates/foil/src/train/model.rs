//! The model a run starts from: the base folder's settings and tokenizer, and its weights —
//! the base's, or the checkpoint's when the run resumes — as trainable variables with their
//! AdamW state.

use std::path::{Path, PathBuf};

use candle_core::{Device, Var};
use foil_candle::config::{Family, ModelConfig, SentenceConfig};
use foil_candle::model::CandleModel;
use foil_candle::tokenizer::TextTokenizer;
use foil_candle::weights::Weights;
use foil_core::{Error, Result};
use foil_train::{AdamW, AdamWConfig};

use super::checkpoint::load_state;
use super::{ModelType, TrainConfig};

/// The base model folder.
pub(super) struct Base {
    pub dir: PathBuf,
    pub architecture: ModelConfig,
    /// The settings training uses (`max_length` shapes the batches).
    pub sentence: SentenceConfig,
    /// The base's own settings, which the saved folder keeps.
    pub saved: SentenceConfig,
    pub tokenizer: TextTokenizer,
}

impl Base {
    pub fn read(config: &TrainConfig) -> Result<Base> {
        let dir = crate::encoder_spec::resolve_model(&config.model)?;
        let architecture = ModelConfig::read(&dir.join("config.json"))?;
        let mut sentence = SentenceConfig::read(&dir, &architecture)?;
        let saved = sentence.clone();
        if let Some(n) = config.max_length {
            sentence.max_length = n.min(architecture.max_tokens());
        }
        let tokenizer = TextTokenizer::load(&dir, sentence.max_length)?;
        Ok(Base {
            dir,
            architecture,
            sentence,
            saved,
            tokenizer,
        })
    }

    /// The encoder family, which names a cross-encoder's weights (`bert.`, `roberta.`, …).
    pub fn family(&self) -> Family {
        match &self.architecture {
            ModelConfig::Encoder(bert) => bert.family(),
            ModelConfig::ModernBert(_) | ModelConfig::Decoder(_) => Family::Bert,
        }
    }
}

/// The weights being trained, their optimizer, and where the run stands.
pub(super) struct Trainable {
    pub model: CandleModel,
    /// A cross-encoder's pooler (dense + tanh before the classifier), trained too.
    pub pooler: Option<(Var, Var)>,
    /// Every trained variable by name (the model's, then the pooler's).
    pub vars: Vec<(String, Var)>,
    pub optimizer: AdamW,
    /// Steps done (0, or the checkpoint's).
    pub step: u64,
    /// The loss of every step done.
    pub losses: Vec<f32>,
}

/// Loads the weights — from `checkpoint` if it holds a state of the run `run_id`, else from
/// the base — and the optimizer.
pub(super) fn load(
    config: &TrainConfig,
    base: &Base,
    checkpoint: &Path,
    run_id: &str,
) -> Result<Trainable> {
    let state = load_state(checkpoint, run_id);
    let device = foil_candle::encoder::parse_device(&config.device)?.unwrap_or(Device::Cpu);
    let weights_dir = if state.is_some() {
        checkpoint
    } else {
        &base.dir
    };
    let weights = Weights::load(weights_dir, &device)?;
    let cross = config.model_type == ModelType::CrossEncoder;
    let one_logit = match &base.architecture {
        ModelConfig::Encoder(bert) => {
            (weights.contains("classifier.weight")
                || weights.contains("classifier.out_proj.weight"))
                && bert.labels() == 1
        }
        ModelConfig::ModernBert(_) | ModelConfig::Decoder(_) => false,
    };
    if cross && !one_logit {
        return Err(Error::Invalid(format!(
            "{}: not a one-logit BertForSequenceClassification or \
             XLMRobertaForSequenceClassification folder (make one with `foil init-cross-encoder`)",
            base.dir.display()
        )));
    }
    let model = CandleModel::new(&base.architecture, &weights, &device)?;
    let pooler = if cross && weights.contains("pooler.dense.weight") {
        let h = base.architecture.hidden_size();
        let w = Var::from_tensor(weights.get("pooler.dense.weight", &[h, h])?)?;
        let b = Var::from_tensor(weights.get("pooler.dense.bias", &[h])?)?;
        Some((w, b))
    } else {
        None
    };
    drop(weights);
    let mut vars: Vec<(String, Var)> = model.vars().to_vec();
    if let Some((w, b)) = &pooler {
        vars.push(("pooler.dense.weight".into(), w.clone()));
        vars.push(("pooler.dense.bias".into(), b.clone()));
    }
    let mut optimizer = AdamW::new(
        &vars,
        AdamWConfig {
            weight_decay: config.weight_decay,
            ..AdamWConfig::default()
        },
    );
    if let Some(head_lr) = config.head_lr {
        if !cross {
            return Err(Error::config(
                "head_lr",
                "is for cross-encoders (a bi-encoder has no head)",
            ));
        }
        if config.lr <= 0.0 {
            return Err(Error::config("head_lr", "needs a positive lr"));
        }
        optimizer.scale_lr(|name| name.starts_with("classifier."), head_lr / config.lr);
    }
    let (step, losses) = match state {
        Some(s) => {
            optimizer.load(&checkpoint.join("optimizer.safetensors"))?;
            tracing::info!(step = s.step, "resuming from {}", checkpoint.display());
            (s.step, s.losses)
        }
        None => (0, Vec::new()),
    };
    Ok(Trainable {
        model,
        pooler,
        vars,
        optimizer,
        step,
        losses,
    })
}
