//! Importing the customers of an existing WireGuard server (`wgsub-api import`), the pure part:
//! reading the server's peers ([`source`]: `wg0.conf` or `wg show dump`), the CSV mapping each
//! peer to a Telegram user ([`mapping`]) and planning what to write ([`plan`]). The api's
//! `import` module is the shell that reads the current state and applies the plan.

pub mod mapping;
pub mod plan;
pub mod source;

#[cfg(test)]
mod tests;
