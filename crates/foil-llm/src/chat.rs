//! Chat templates. GGUF files carry a Jinja template (`tokenizer.chat_template`); foil does not
//! run Jinja. It recognises the ChatML family (templates writing `<|im_start|>`) and renders
//! ChatML itself:
//!
//! ```text
//! <|im_start|>system\n{default system prompt}<|im_end|>\n   (only when the chat has no system message first)
//! <|im_start|>{role}\n{content}<|im_end|>\n                  (each message)
//! <|im_start|>assistant\n                                    (the generation prompt)
//! ```
//!
//! The default system prompt is read from the template itself: the literal text a template
//! writes between `<|im_start|>system\n` and `<|im_end|>` (Qwen2.5: "You are Qwen, created by
//! Alibaba Cloud. You are a helpful assistant."; SmolLM2: "You are a helpful AI assistant named
//! SmolLM, trained by Hugging Face"). Any other template is refused with an error naming the file.

use std::path::Path;

use foil_core::generator::{ChatMessage, Role};
use foil_core::{Error, Result};
use sha2::{Digest, Sha256};

/// A chat template foil can render.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    /// The system prompt the template inserts when a chat does not start with one.
    default_system: Option<String>,
    /// SHA-256 of the template text, for fingerprints.
    sha256: String,
}

const START: &str = "<|im_start|>";
const END: &str = "<|im_end|>";

impl ChatTemplate {
    /// Recognises `template` (read from `path`, named in errors).
    pub fn from_template(template: &str, path: &Path) -> Result<Self> {
        if !template.contains(START) || !template.contains(END) {
            let head: String = template.chars().take(80).collect();
            return Err(Error::format(
                path,
                format!(
                    "unsupported chat template (only ChatML templates are supported): \"{head}…\""
                ),
            ));
        }
        Ok(ChatTemplate {
            default_system: default_system_prompt(template),
            sha256: foil_core::fsutil::hex(&Sha256::digest(template.as_bytes())),
        })
    }

    /// The default system prompt, if the template has one.
    pub fn default_system(&self) -> Option<&str> {
        self.default_system.as_deref()
    }

    /// An identity for fingerprints: the family and the template's SHA-256.
    pub fn identity(&self) -> String {
        format!("chatml:{}", &self.sha256[..16])
    }

    /// The prompt text for `messages`, ending with the assistant generation prompt.
    pub fn render(&self, messages: &[ChatMessage]) -> String {
        let mut out = String::new();
        let starts_with_system = messages.first().is_some_and(|m| m.role == Role::System);
        if !starts_with_system {
            if let Some(system) = &self.default_system {
                push_turn(&mut out, "system", system);
            }
        }
        for m in messages {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            push_turn(&mut out, role, &m.content);
        }
        out.push_str(START);
        out.push_str("assistant\n");
        out
    }
}

fn push_turn(out: &mut String, role: &str, content: &str) {
    out.push_str(START);
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str(END);
    out.push('\n');
}

/// The literal system prompt a ChatML template writes between `<|im_start|>system` + newline and
/// `<|im_end|>`, skipping places where the content is an expression (it holds a quote or `{`).
fn default_system_prompt(template: &str) -> Option<String> {
    let marker = "<|im_start|>system";
    let mut rest = template;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        // The newline is written either as an escape inside a string literal or literally.
        let body = if let Some(b) = rest.strip_prefix("\\n") {
            b
        } else if let Some(b) = rest.strip_prefix('\n') {
            b
        } else {
            continue;
        };
        let Some(end) = body.find(END) else { continue };
        let text = &body[..end];
        if text.is_empty() || text.contains(['\'', '"', '{', '}', '+']) {
            continue;
        }
        return Some(text.replace("\\n", "\n"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_literal_default_system_prompt() {
        let t = "{% if x %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>' }}{% else %}{{ '<|im_start|>system\\nBe nice.<|im_end|>\\n' }}{% endif %}";
        assert_eq!(default_system_prompt(t).as_deref(), Some("Be nice."));
    }

    #[test]
    fn refuses_other_templates() {
        let e = ChatTemplate::from_template("{{ bos_token }}[INST]", Path::new("m.gguf"));
        assert!(e
            .unwrap_err()
            .to_string()
            .starts_with("m.gguf: unsupported chat template"));
    }

    #[test]
    fn renders_chatml() {
        let t = ChatTemplate::from_template(
            "<|im_start|>system\nDefault<|im_end|> <|im_start|>",
            Path::new("m"),
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::user("hi")]),
            "<|im_start|>system\nDefault<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[ChatMessage::system("S"), ChatMessage::user("hi")]),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
