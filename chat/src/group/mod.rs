//! Groups (issue 16): a group is hosted on one concierge and has a
//! hash-linked management log there ([`log`]); its key is rotated through
//! that log and messages are encrypted once under it ([`crypto`]).

pub mod crypto;
pub mod log;
