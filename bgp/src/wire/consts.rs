//! Numbers fixed by the RFCs: message types and sizes, NOTIFICATION codes and subcodes.

/// RFC 4271 §4.1: marker, length and type.
pub const HEADER_LEN: usize = 19;
/// RFC 4271 §4: the largest message, and RFC 8654's for everything but OPEN and KEEPALIVE.
pub const MAX_MESSAGE_LEN: usize = 4096;
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;

/// The one BGP version spoken (RFC 4271 §4.2).
pub const BGP_VERSION: u8 = 4;

/// Message type codes (RFC 4271 §4.1, RFC 2918 §3).
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Minimum message lengths, header included (RFC 4271 §4.2–§4.5, RFC 2918 §3).
pub mod min_len {
    pub const OPEN: usize = 29;
    pub const UPDATE: usize = 23;
    pub const NOTIFICATION: usize = 21;
    pub const KEEPALIVE: usize = 19;
    pub const ROUTE_REFRESH: usize = 23;
}

/// OPEN optional parameter types (RFC 5492 §4, RFC 9072 §2).
pub mod opt_param {
    pub const CAPABILITIES: u8 = 2;
    /// RFC 9072: in the first parameter's type position, marks the extended format.
    pub const EXTENDED_LENGTH: u8 = 255;
}

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313 §5).
pub mod error_code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH_MESSAGE: u8 = 7;
}

/// Message Header Error subcodes (RFC 4271 §6.1).
pub mod header_subcode {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271 §6.2, RFC 5492 §5, RFC 9234 §4.2).
pub mod open_subcode {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    pub const ROLE_MISMATCH: u8 = 11;
}

/// UPDATE Message Error subcodes (RFC 4271 §6.3).
pub mod update_subcode {
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const MISSING_WELL_KNOWN: u8 = 3;
    pub const ATTRIBUTE_FLAGS: u8 = 4;
    pub const ATTRIBUTE_LENGTH: u8 = 5;
    pub const INVALID_ORIGIN: u8 = 6;
    pub const INVALID_NEXT_HOP: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Finite State Machine Error subcodes (RFC 6608 §3).
pub mod fsm_subcode {
    pub const UNSPECIFIED: u8 = 0;
    pub const UNEXPECTED_IN_OPENSENT: u8 = 1;
    pub const UNEXPECTED_IN_OPENCONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486 §4, RFC 8538 §5).
pub mod cease_subcode {
    pub const MAX_PREFIXES: u8 = 1;
    pub const ADMIN_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMIN_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIG_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    pub const HARD_RESET: u8 = 9;
    /// RFC 9384 §5.
    pub const BFD_DOWN: u8 = 10;
}

/// ROUTE-REFRESH Message Error subcodes (RFC 7313 §5).
pub mod route_refresh_subcode {
    pub const INVALID_MESSAGE_LENGTH: u8 = 1;
}

/// The name of a NOTIFICATION error code or subcode: the IANA registry's ("Maximum Number
/// of Prefixes Reached", for logs and the message's `Display`) and the shorter lower-case
/// wording of a peer's last error in `serval bgp status` and `serval node status`
/// ("cease: maximum number of prefixes reached"), derived from it unless the row says
/// otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorName {
    pub code: u8,
    /// `None` names the code itself.
    pub subcode: Option<u8>,
    pub iana: &'static str,
    status: Status,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// The IANA name with its capitalised words in lower case ("Bad Peer AS" → "bad peer AS").
    Lowercase,
    Own(&'static str),
    /// The status names the code alone.
    Omitted,
}

const fn code(code: u8, iana: &'static str) -> ErrorName {
    ErrorName {
        code,
        subcode: None,
        iana,
        status: Status::Lowercase,
    }
}

const fn sub(code: u8, subcode: u8, iana: &'static str) -> ErrorName {
    ErrorName {
        code,
        subcode: Some(subcode),
        iana,
        status: Status::Lowercase,
    }
}

impl ErrorName {
    const fn in_status(self, words: &'static str) -> ErrorName {
        ErrorName {
            status: Status::Own(words),
            ..self
        }
    }

    const fn not_in_status(self) -> ErrorName {
        ErrorName {
            status: Status::Omitted,
            ..self
        }
    }

    /// Writes the status wording (nothing when the status leaves this name out).
    fn write_status(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Status::Omitted => {}
            Status::Own(words) => f.write_str(words)?,
            Status::Lowercase => {
                for (i, word) in self.iana.split(' ').enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    let mut chars = word.chars();
                    match chars.next() {
                        // An acronym or a name (`AS`, `NEXT_HOP`) keeps its capitals.
                        Some(first) if !chars.as_str().chars().any(char::is_uppercase) => {
                            write!(f, "{}{}", first.to_lowercase(), chars.as_str())?
                        }
                        _ => f.write_str(word)?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// Every code and subcode serval names (IANA "BGP Error (Notification) Codes" and "BGP
/// Error Subcodes"): the one table the codec's `Display` and the FSM's status read.
#[rustfmt::skip]
pub const ERROR_NAMES: &[ErrorName] = {
    use error_code::*;
    &[
        code(MESSAGE_HEADER, "Message Header Error"),
        sub(MESSAGE_HEADER, header_subcode::CONNECTION_NOT_SYNCHRONIZED, "Connection Not Synchronized"),
        sub(MESSAGE_HEADER, header_subcode::BAD_MESSAGE_LENGTH, "Bad Message Length"),
        sub(MESSAGE_HEADER, header_subcode::BAD_MESSAGE_TYPE, "Bad Message Type"),
        code(OPEN_MESSAGE, "OPEN Message Error").in_status("OPEN error"),
        sub(OPEN_MESSAGE, open_subcode::UNSUPPORTED_VERSION, "Unsupported Version Number"),
        sub(OPEN_MESSAGE, open_subcode::BAD_PEER_AS, "Bad Peer AS"),
        sub(OPEN_MESSAGE, open_subcode::BAD_BGP_IDENTIFIER, "Bad BGP Identifier"),
        sub(OPEN_MESSAGE, open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER, "Unsupported Optional Parameter"),
        sub(OPEN_MESSAGE, open_subcode::UNACCEPTABLE_HOLD_TIME, "Unacceptable Hold Time"),
        sub(OPEN_MESSAGE, open_subcode::UNSUPPORTED_CAPABILITY, "Unsupported Capability"),
        sub(OPEN_MESSAGE, open_subcode::ROLE_MISMATCH, "Role Mismatch"),
        code(UPDATE_MESSAGE, "UPDATE Message Error").in_status("UPDATE error"),
        sub(UPDATE_MESSAGE, update_subcode::MALFORMED_ATTRIBUTE_LIST, "Malformed Attribute List"),
        sub(UPDATE_MESSAGE, update_subcode::UNRECOGNIZED_WELL_KNOWN, "Unrecognized Well-known Attribute"),
        sub(UPDATE_MESSAGE, update_subcode::MISSING_WELL_KNOWN, "Missing Well-known Attribute"),
        sub(UPDATE_MESSAGE, update_subcode::ATTRIBUTE_FLAGS, "Attribute Flags Error"),
        sub(UPDATE_MESSAGE, update_subcode::ATTRIBUTE_LENGTH, "Attribute Length Error"),
        sub(UPDATE_MESSAGE, update_subcode::INVALID_ORIGIN, "Invalid ORIGIN Attribute"),
        sub(UPDATE_MESSAGE, update_subcode::INVALID_NEXT_HOP, "Invalid NEXT_HOP Attribute"),
        sub(UPDATE_MESSAGE, update_subcode::OPTIONAL_ATTRIBUTE, "Optional Attribute Error"),
        sub(UPDATE_MESSAGE, update_subcode::INVALID_NETWORK_FIELD, "Invalid Network Field"),
        sub(UPDATE_MESSAGE, update_subcode::MALFORMED_AS_PATH, "Malformed AS_PATH"),
        code(HOLD_TIMER_EXPIRED, "Hold Timer Expired"),
        code(FSM, "Finite State Machine Error").in_status("FSM error"),
        sub(FSM, fsm_subcode::UNSPECIFIED, "Unspecified Error").not_in_status(),
        sub(FSM, fsm_subcode::UNEXPECTED_IN_OPENSENT, "Receive Unexpected Message in OpenSent State").in_status("unexpected message in OpenSent"),
        sub(FSM, fsm_subcode::UNEXPECTED_IN_OPENCONFIRM, "Receive Unexpected Message in OpenConfirm State").in_status("unexpected message in OpenConfirm"),
        sub(FSM, fsm_subcode::UNEXPECTED_IN_ESTABLISHED, "Receive Unexpected Message in Established State").in_status("unexpected message in Established"),
        code(CEASE, "Cease"),
        sub(CEASE, cease_subcode::MAX_PREFIXES, "Maximum Number of Prefixes Reached"),
        sub(CEASE, cease_subcode::ADMIN_SHUTDOWN, "Administrative Shutdown"),
        sub(CEASE, cease_subcode::PEER_DECONFIGURED, "Peer De-configured"),
        sub(CEASE, cease_subcode::ADMIN_RESET, "Administrative Reset"),
        sub(CEASE, cease_subcode::CONNECTION_REJECTED, "Connection Rejected"),
        sub(CEASE, cease_subcode::OTHER_CONFIG_CHANGE, "Other Configuration Change"),
        sub(CEASE, cease_subcode::CONNECTION_COLLISION, "Connection Collision Resolution"),
        sub(CEASE, cease_subcode::OUT_OF_RESOURCES, "Out of Resources"),
        sub(CEASE, cease_subcode::HARD_RESET, "Hard Reset"),
        sub(CEASE, cease_subcode::BFD_DOWN, "BFD Down"),
        code(ROUTE_REFRESH_MESSAGE, "ROUTE-REFRESH Message Error").in_status("ROUTE-REFRESH error"),
        sub(ROUTE_REFRESH_MESSAGE, route_refresh_subcode::INVALID_MESSAGE_LENGTH, "Invalid Message Length").not_in_status(),
    ]
};

/// The name of an error code.
pub fn error_code_name(code: u8) -> Option<&'static ErrorName> {
    ERROR_NAMES
        .iter()
        .find(|n| n.code == code && n.subcode.is_none())
}

/// The name of a subcode within its code.
pub fn error_subcode_name(code: u8, subcode: u8) -> Option<&'static ErrorName> {
    ERROR_NAMES
        .iter()
        .find(|n| n.code == code && n.subcode == Some(subcode))
}

/// A code and subcode as a peer's last error reads in the status:
/// "cease: administrative shutdown", "hold timer expired", "unknown error code".
pub fn error_status(code: u8, subcode: u8) -> impl std::fmt::Display {
    struct Said(u8, u8);
    impl std::fmt::Display for Said {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let Some(code) = error_code_name(self.0) else {
                return f.write_str("unknown error code");
            };
            code.write_status(f)?;
            match error_subcode_name(self.0, self.1) {
                Some(sub) if sub.status != Status::Omitted => {
                    f.write_str(": ")?;
                    sub.write_status(f)
                }
                _ => Ok(()),
            }
        }
    }
    Said(code, subcode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_once_in_the_table_under_a_named_code() {
        for (i, n) in ERROR_NAMES.iter().enumerate() {
            assert!(
                !ERROR_NAMES[..i]
                    .iter()
                    .any(|m| (m.code, m.subcode) == (n.code, n.subcode)),
                "{n:?} twice"
            );
            assert!(error_code_name(n.code).is_some(), "{n:?} under no code");
            assert!(!n.iana.is_empty(), "{n:?}");
        }
    }
}
