//! Prompt templates: versioned text files that turn a passage (or a query) into chat messages.
//!
//! ```text
//! # comment lines start with '#' (in the header only)
//! name = few-shot
//! version = 1
//! task = queries
//! ==== step            (optional when the task has one step)
//! ---- system
//! You write …
//! ---- user
//! Passage: {passage}
//! ```
//!
//! The header holds `name`, `version` (a positive integer) and `task`: `queries` (one step,
//! `query`, placeholders `{passage}`, `{title}`, `{text}`), `negatives-query-only` (steps
//! `describe` with `{query}`, then `write` with `{query}` and `{description}`) or
//! `negatives-query-positive` (one step, `write`, with `{query}` and `{positive}`). A line
//! `---- <role>` (`system`, `user`, `assistant`) starts a message, whose text runs to the next
//! marker with surrounding blank lines removed; few-shot examples are user/assistant turns.
//! `{{` and `}}` are literal braces. Unknown placeholders, roles, steps or header keys are
//! errors naming the file and line.
//!
//! foil's own templates live in `crates/foil/templates/` and are compiled in; a template is
//! chosen by name (`zero-shot`, `few-shot`, `query-only`, `query-positive`) or by the path of
//! a file in this format. Its name and version go into the cache key and the manifest: change
//! a prompt, bump its version.

use std::collections::BTreeMap;
use std::path::Path;

use foil_core::{ChatMessage, Error, Result, Role};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// A (passage, query) pair shown to the model as an example of the queries wanted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub passage: String,
    pub query: String,
}

/// Reads examples from a JSON Lines file of `{"passage": …, "query": …}` objects; a bad line
/// is an error naming the file and line.
pub fn read_examples(path: &Path) -> Result<Vec<Example>> {
    let text = foil_core::lines::read_to_string(path)?;
    let mut examples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let example: Example = serde_json::from_str(line).map_err(|e| Error::Input {
            file: path.to_path_buf(),
            line: n as u64 + 1,
            reason: foil_core::SkipReason::MalformedJson,
            message: format!("{e}: expected {{\"passage\": …, \"query\": …}}"),
        })?;
        if example.passage.trim().is_empty() || example.query.trim().is_empty() {
            return Err(Error::Input {
                file: path.to_path_buf(),
                line: n as u64 + 1,
                reason: foil_core::SkipReason::EmptyText,
                message: "empty passage or query".into(),
            });
        }
        examples.push(example);
    }
    if examples.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no examples (one {{\"passage\", \"query\"}} object per line)",
            path.display()
        )));
    }
    Ok(examples)
}

/// The templates compiled into foil: (file name, contents).
pub const BUILTIN: [(&str, &str); 9] = [
    (
        "queries-zero-shot.txt",
        include_str!("../../templates/queries-zero-shot.txt"),
    ),
    (
        "queries-few-shot.txt",
        include_str!("../../templates/queries-few-shot.txt"),
    ),
    (
        "queries-few-shot-question.txt",
        include_str!("../../templates/queries-few-shot-question.txt"),
    ),
    (
        "queries-few-shot-keywords.txt",
        include_str!("../../templates/queries-few-shot-keywords.txt"),
    ),
    (
        "queries-few-shot-claim.txt",
        include_str!("../../templates/queries-few-shot-claim.txt"),
    ),
    (
        "judge-yes-no.txt",
        include_str!("../../templates/judge-yes-no.txt"),
    ),
    (
        "judge-yes-no-few-shot.txt",
        include_str!("../../templates/judge-yes-no-few-shot.txt"),
    ),
    (
        "negatives-query-only.txt",
        include_str!("../../templates/negatives-query-only.txt"),
    ),
    (
        "negatives-query-positive.txt",
        include_str!("../../templates/negatives-query-positive.txt"),
    ),
];

/// What a template generates; fixes its steps and their placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Queries,
    NegativesQueryOnly,
    NegativesQueryPositive,
    /// A relevance judgment of a (query, passage) pair, read from the next-token distribution.
    Judge,
}

impl Task {
    fn parse(value: &str) -> Option<Self> {
        match value {
            "queries" => Some(Task::Queries),
            "negatives-query-only" => Some(Task::NegativesQueryOnly),
            "negatives-query-positive" => Some(Task::NegativesQueryPositive),
            "judge" => Some(Task::Judge),
            _ => None,
        }
    }

    /// The task's name in template headers.
    pub fn name(self) -> &'static str {
        match self {
            Task::Queries => "queries",
            Task::NegativesQueryOnly => "negatives-query-only",
            Task::NegativesQueryPositive => "negatives-query-positive",
            Task::Judge => "judge",
        }
    }

    /// The steps, in order, with the placeholders each may use.
    pub fn steps(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            Task::Queries => &[("query", &["passage", "title", "text"])],
            Task::NegativesQueryOnly => &[
                ("describe", &["query"]),
                ("write", &["query", "description"]),
            ],
            Task::NegativesQueryPositive => &[("write", &["query", "positive"])],
            Task::Judge => &[("judge", &["query", "passage"])],
        }
    }
}

/// A piece of a message: literal text or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct MessageTemplate {
    role: Role,
    pieces: Vec<Piece>,
}

/// A parsed prompt template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub version: u32,
    pub task: Task,
    /// Where it came from: `builtin:<file>` or the path given.
    pub source: String,
    steps: BTreeMap<String, Vec<MessageTemplate>>,
}

impl Template {
    /// [`Template::load`], refusing a template written for another task.
    pub fn load_for(name_or_path: &str, task: Task) -> Result<Self> {
        let template = Self::load(name_or_path)?;
        if template.task != task {
            return Err(Error::Invalid(format!(
                "template {} is for {}, not {}",
                template.source,
                template.task.name(),
                task.name()
            )));
        }
        Ok(template)
    }

    /// A built-in template by name (`few-shot`) or file stem (`queries-few-shot`), or a
    /// template file by path.
    pub fn load(name_or_path: &str) -> Result<Self> {
        for (file, text) in BUILTIN {
            let template = Self::parse(text, &format!("builtin:{file}"))?;
            if template.name == name_or_path || file.strip_suffix(".txt") == Some(name_or_path) {
                return Ok(template);
            }
        }
        let path = Path::new(name_or_path);
        if path.is_file() {
            let text = foil_core::lines::read_to_string(path)?;
            return Self::parse(&text, &path.display().to_string());
        }
        let names: Vec<String> = BUILTIN
            .iter()
            .filter_map(|(f, t)| Self::parse(t, f).ok().map(|t| t.name))
            .collect();
        Err(Error::Invalid(format!(
            "template {:?} is neither a built-in template ({}) nor a file",
            name_or_path,
            names.join(", ")
        )))
    }

    /// Parses a template; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let err = |line: usize, message: String| {
            Error::Invalid(format!("template {source}:{}: {message}", line + 1))
        };
        let lines: Vec<&str> = text.lines().collect();
        let (name, version, task, mut i) = parse_header(&lines, source)?;
        let allowed = task.steps();
        let mut steps: BTreeMap<String, Vec<MessageTemplate>> = BTreeMap::new();
        let mut step: Option<String> = (allowed.len() == 1).then(|| allowed[0].0.to_string());
        let mut current: Option<(Role, usize, Vec<&str>)> = None;
        let finish = |step: &Option<String>,
                      current: &mut Option<(Role, usize, Vec<&str>)>,
                      steps: &mut BTreeMap<String, Vec<MessageTemplate>>|
         -> Result<()> {
            let Some((role, start, body)) = current.take() else {
                return Ok(());
            };
            let Some(step) = step else {
                return Err(err(start, "a message before any `==== <step>` line".into()));
            };
            let slots = allowed
                .iter()
                .find(|(s, _)| s == step)
                .map(|(_, slots)| *slots)
                .unwrap_or(&[]);
            let text = body.join("\n");
            let pieces = parse_pieces(text.trim_matches(['\n', '\r', ' ', '\t']))
                .map_err(|m| err(start, m))?;
            for piece in &pieces {
                if let Piece::Slot(slot) = piece {
                    if !slots.contains(&slot.as_str()) {
                        return Err(err(
                            start,
                            format!(
                                "placeholder {{{slot}}} is not one of step {step:?} ({})",
                                slots
                                    .iter()
                                    .map(|s| format!("{{{s}}}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                }
            }
            steps
                .entry(step.clone())
                .or_default()
                .push(MessageTemplate { role, pieces });
            Ok(())
        };
        while i < lines.len() {
            let line = lines[i].trim_end_matches('\r');
            if let Some(rest) = line.strip_prefix("====") {
                finish(&step, &mut current, &mut steps)?;
                let name = rest.trim();
                if !allowed.iter().any(|(s, _)| *s == name) {
                    return Err(err(
                        i,
                        format!(
                            "unknown step {name:?} for task {} ({})",
                            task.name(),
                            allowed
                                .iter()
                                .map(|(s, _)| *s)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                if steps.contains_key(name) {
                    return Err(err(i, format!("step {name:?} appears twice")));
                }
                step = Some(name.to_string());
            } else if let Some(rest) = line.strip_prefix("----") {
                finish(&step, &mut current, &mut steps)?;
                let role = match rest.trim() {
                    "system" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(err(
                            i,
                            format!("unknown role {other:?} (system, user, assistant)"),
                        ))
                    }
                };
                current = Some((role, i, Vec::new()));
            } else if let Some((_, _, body)) = current.as_mut() {
                body.push(line);
            } else if !line.trim().is_empty() {
                return Err(err(i, "text outside a `---- <role>` message".into()));
            }
            i += 1;
        }
        finish(&step, &mut current, &mut steps)?;
        for (name, _) in allowed {
            match steps.get(*name) {
                None => {
                    return Err(Error::Invalid(format!(
                        "template {source}: no messages for step {name:?}"
                    )))
                }
                Some(messages) if messages.last().map(|m| m.role) != Some(Role::User) => {
                    return Err(Error::Invalid(format!(
                        "template {source}: step {name:?} must end with a user message"
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(Self {
            name,
            version,
            task,
            source: source.to_string(),
            steps,
        })
    }

    /// `name@version`, as recorded in outputs.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The same template with its few-shot examples (the user/assistant turns before the last
    /// user message of each step) replaced by `examples`: each a user turn (the last user
    /// message filled with the example's passage as `{passage}` and `{text}`, an empty
    /// `{title}`) and an assistant turn (the example's query). The system messages stay; the
    /// examples' hash joins the template's name, so that caches tell the prompts apart.
    pub fn with_examples(&self, examples: &[Example]) -> Result<Self> {
        if self.task != Task::Queries {
            return Err(Error::Invalid(format!(
                "template {}: examples are for query templates, not {}",
                self.source,
                self.task.name()
            )));
        }
        let mut steps = BTreeMap::new();
        for (step, messages) in &self.steps {
            let last = messages
                .last()
                .cloned()
                .ok_or_else(|| Error::Invalid(format!("template {}: empty step", self.source)))?;
            let mut out: Vec<MessageTemplate> = messages
                .iter()
                .take_while(|m| m.role == Role::System)
                .cloned()
                .collect();
            for example in examples {
                let mut user = Vec::new();
                for piece in &last.pieces {
                    user.push(match piece {
                        Piece::Slot(s) if s == "passage" || s == "text" => {
                            Piece::Text(example.passage.clone())
                        }
                        Piece::Slot(s) if s == "title" => Piece::Text(String::new()),
                        other => other.clone(),
                    });
                }
                out.push(MessageTemplate {
                    role: Role::User,
                    pieces: user,
                });
                out.push(MessageTemplate {
                    role: Role::Assistant,
                    pieces: vec![Piece::Text(example.query.clone())],
                });
            }
            out.push(last);
            steps.insert(step.clone(), out);
        }
        let digest = foil_core::fsutil::hex(&sha2::Sha256::digest(
            serde_json::to_vec(examples).unwrap_or_default(),
        ));
        Ok(Self {
            name: format!("{}+examples-{}", self.name, &digest[..12]),
            version: self.version,
            task: self.task,
            source: self.source.clone(),
            steps,
        })
    }

    /// The messages of `step` with the placeholders filled from `values`.
    pub fn render(&self, step: &str, values: &[(&str, &str)]) -> Result<Vec<ChatMessage>> {
        let messages = self.steps.get(step).ok_or_else(|| {
            Error::Invalid(format!("template {} has no step {step:?}", self.source))
        })?;
        messages
            .iter()
            .map(|m| {
                let mut content = String::new();
                for piece in &m.pieces {
                    match piece {
                        Piece::Text(t) => content.push_str(t),
                        Piece::Slot(s) => {
                            let value = values
                                .iter()
                                .find(|(k, _)| k == s)
                                .map(|(_, v)| *v)
                                .ok_or_else(|| {
                                    Error::Invalid(format!("no value for placeholder {{{s}}}"))
                                })?;
                            content.push_str(value);
                        }
                    }
                }
                Ok(ChatMessage {
                    role: m.role,
                    content,
                })
            })
            .collect()
    }
}

/// The header of a template — `name`, `version` and `task` lines before the first `----` or
/// `====` line — and the index of the line after it.
fn parse_header(lines: &[&str], source: &str) -> Result<(String, u32, Task, usize)> {
    let err = |line: usize, message: String| {
        Error::Invalid(format!("template {source}:{}: {message}", line + 1))
    };
    let mut header: BTreeMap<String, String> = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end_matches('\r');
        if line.starts_with("----") || line.starts_with("====") {
            break;
        }
        let trimmed = line.trim();
        if !(trimmed.is_empty() || trimmed.starts_with('#')) {
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(err(i, format!("expected `key = value`, found {trimmed:?}")));
            };
            let key = key.trim();
            if !matches!(key, "name" | "version" | "task") {
                return Err(err(i, format!("unknown header key {key:?}")));
            }
            header.insert(key.to_string(), value.trim().to_string());
        }
        i += 1;
    }
    let missing = |key: &str| Error::Invalid(format!("template {source}: no `{key} = …` line"));
    let name = header.get("name").ok_or_else(|| missing("name"))?.clone();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(Error::Invalid(format!(
            "template {source}: name {name:?} must be one word"
        )));
    }
    let version: u32 = header
        .get("version")
        .ok_or_else(|| missing("version"))?
        .parse()
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "template {source}: version must be a positive integer"
            ))
        })?;
    let task_name = header.get("task").ok_or_else(|| missing("task"))?;
    let task = Task::parse(task_name).ok_or_else(|| {
        Error::Invalid(format!(
            "template {source}: unknown task {task_name:?} (queries, negatives-query-only, negatives-query-positive, judge)"
        ))
    })?;
    Ok((name, version, task, i))
}

/// Splits a message into text and `{placeholder}`s; `{{` and `}}` are literal braces.
fn parse_pieces(text: &str) -> std::result::Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                        _ => {
                            return Err(format!(
                                "unclosed or malformed placeholder {{{name} (write {{{{ for a literal brace)"
                            ))
                        }
                    }
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Slot(name));
            }
            '}' => return Err("a lone `}` (write }} for a literal brace)".into()),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_are_found_by_name() {
        for name in [
            "zero-shot",
            "few-shot",
            "few-shot-question",
            "few-shot-keywords",
            "few-shot-claim",
            "query-only",
            "query-positive",
            "yes-no",
            "yes-no-few-shot",
        ] {
            let t = Template::load(name).unwrap();
            assert_eq!(t.name, name);
        }
        // By file stem too (the name `foil experiment` once defaulted to).
        assert_eq!(Template::load("queries-few-shot").unwrap().name, "few-shot");
        let few = Template::load("few-shot").unwrap();
        assert_eq!(few.version, 2);
        let messages = few
            .render(
                "query",
                &[("passage", "P {x}"), ("title", ""), ("text", "")],
            )
            .unwrap();
        assert_eq!(messages.len(), 10, "system + 4 example turns + the passage");
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(messages[2].role, Role::Assistant);
        assert_eq!(messages[9].content, "Passage: P {x}");
        let judge = Template::load_for("yes-no", Task::Judge).unwrap();
        let m = judge
            .render("judge", &[("query", "q"), ("passage", "p")])
            .unwrap();
        assert!(m[1].content.contains("Query: q\nPassage: p"), "{m:?}");
        let only = Template::load("query-only").unwrap();
        assert!(only.render("describe", &[("query", "q")]).is_ok());
        assert!(only.render("write", &[("query", "q")]).is_err());
        assert!(Template::load("nope").is_err());
    }

    #[test]
    fn examples_replace_the_few_shot_turns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("examples.jsonl");
        std::fs::write(
            &path,
            "{\"passage\": \"Cats sleep a lot.\", \"query\": \"cat sleep hours\"}\n\n{\"passage\": \"Tea has caffeine.\", \"query\": \"does tea have caffeine\"}\n",
        )
        .unwrap();
        let examples = read_examples(&path).unwrap();
        let t = Template::load("few-shot")
            .unwrap()
            .with_examples(&examples)
            .unwrap();
        assert!(t.name.starts_with("few-shot+examples-"), "{}", t.name);
        let m = t
            .render("query", &[("passage", "P"), ("title", ""), ("text", "")])
            .unwrap();
        let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
        use Role::*;
        assert_eq!(roles, [System, User, Assistant, User, Assistant, User]);
        assert_eq!(m[1].content, "Passage: Cats sleep a lot.");
        assert_eq!(m[4].content, "does tea have caffeine");
        assert_eq!(m[5].content, "Passage: P");
        // Other examples, another name (and cache key).
        let other = Template::load("few-shot")
            .unwrap()
            .with_examples(&examples[..1])
            .unwrap();
        assert_ne!(other.name, t.name);

        std::fs::write(&path, "{\"passage\": \"x\"}\n").unwrap();
        let err = read_examples(&path).unwrap_err().to_string();
        assert!(err.contains("examples.jsonl:1:"), "{err}");
        assert!(Template::load("yes-no")
            .unwrap()
            .with_examples(&examples)
            .is_err());
    }

    #[test]
    fn a_user_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.txt");
        std::fs::write(
            &path,
            "name = mine\nversion = 3\ntask = queries\n---- user\n\nQ for {{ {passage} }}\n\n",
        )
        .unwrap();
        let t = Template::load(path.to_str().unwrap()).unwrap();
        assert_eq!(t.id(), "mine@3");
        let m = t.render("query", &[("passage", "x")]).unwrap();
        assert_eq!(m, vec![ChatMessage::user("Q for { x }")]);

        let bad = [
            ("version = 1\ntask = queries\n---- user\nx", "no `name"),
            ("name = a\nversion = 0\ntask = queries\n---- user\nx", "version must be"),
            ("name = a\nversion = 1\ntask = foo\n---- user\nx", "unknown task"),
            ("name = a\nversion = 1\ntask = queries\n---- user\n{query}", ":4: placeholder {query}"),
            ("name = a\nversion = 1\ntask = queries\n---- robot\nx", ":4: unknown role"),
            ("name = a\nversion = 1\ntask = queries\n---- user\n{passage", "unclosed"),
            ("name = a\nversion = 1\ntask = queries\n---- assistant\nx", "end with a user message"),
            ("name = a\nversion = 1\ntask = negatives-query-only\n==== describe\n---- user\n{query}", "no messages for step \"write\""),
            ("name = a\nversion = 1\ncolour = red\n", ":3: unknown header key"),
        ];
        for (text, expected) in bad {
            let e = Template::parse(text, "t").unwrap_err().to_string();
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        }
    }
}
