//! What a loaded image is, once loading is done: the image and its lookup
//! engine ([`image`]), the process-wide list of images ([`registry`]), the
//! loader services bound into loaded code ([`services`]), the libraries it
//! needs ([`needed`]), its thread-local storage ([`tls`]), its unwind
//! registration ([`unwind`]) and how its initialisers and finalisers are
//! called ([`init`]); TLS that lives with the system loader (other modules'
//! variables, static TLS: [`tls_static`]) and the process-wide definitions
//! of unique symbols ([`unique`]); and what makes an image visible to
//! debuggers and profilers ([`debug`]).
//!
//! Nothing here depends on the load pipeline (`load/`), which builds these
//! values.

pub(crate) mod debug;
pub(crate) mod image;
pub(crate) mod init;
pub(crate) mod needed;
pub(crate) mod registry;
pub(crate) mod services;
pub(crate) mod tls;
pub(crate) mod tls_static;
pub(crate) mod unique;
pub(crate) mod unwind;
