//! The thread's I/O: every wait in one place (`reactor`, over `poll`), the
//! health listener (`serve`), the HTTP agent's connections (`transport`,
//! `http`, `resolve`, `proxy`, `settings`) and the watch streams (`stream`,
//! with `exchange` and `lines`).

pub mod exchange;
pub mod http;
pub mod lines;
pub mod poll;
pub mod proxy;
pub mod reactor;
pub mod resolve;
pub mod serve;
pub mod settings;
pub mod stream;
pub mod transport;
