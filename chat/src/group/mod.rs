//! Groups (issue 16, in progress): a group is hosted on one concierge and
//! has a hash-linked management log there ([`log`]). So far: the log's
//! rule, pure and tested; the server's compare-and-swap, the encrypted
//! body, messages under the epoch key and moving a group come next.

pub mod log;
