//! Test support for foil, used only as a dev-dependency: a loopback mock of an
//! OpenAI-compatible server ([`MockServer`]) that records every request and answers as a
//! test's script says, and the answers an OpenAI-compatible server gives
//! ([`embeddings`], [`chat_completion`]).

mod openai;
mod server;

pub use openai::{chat_completion, embeddings, embeddings_body, vector, NATIVE_DIM};
pub use server::{MockServer, Reply, Request};
