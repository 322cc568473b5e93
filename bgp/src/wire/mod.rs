//! The BGP wire format: message framing, each message kind, path attributes and the errors
//! their decoding can raise.

pub mod attr;
pub mod notification;
pub mod open;
pub mod route_refresh;
pub mod update;

pub use attr::PathAttrs;
pub use notification::Notification;
pub use open::{Capability, Open};
pub use route_refresh::RouteRefresh;
pub use update::{Nlri, Update};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}
