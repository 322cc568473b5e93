//! Network devices by name and index: the lookups routes, tunnels and MTU share.

use std::collections::BTreeMap;

use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::netlink::Netlink;
use super::Error;

/// Every device of the namespace, name → index.
pub async fn indices(nl: &Netlink) -> Result<BTreeMap<String, u32>, Error> {
    let links = nl
        .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
        .await
        .map_err(|e| Error::netlink("listing network devices", e))?;
    Ok(links
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(link) => {
                name(&link).map(|n| (n.to_owned(), link.header.index))
            }
            _ => None,
        })
        .collect())
}

/// The device called `name`, if there is one.
pub async fn by_name(nl: &Netlink, name: &str) -> Result<Option<LinkMessage>, Error> {
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::IfName(name.to_owned()));
    get(nl, request, || format!("looking up device {name}")).await
}

/// The device with index `index`, if there is one.
pub async fn by_index(nl: &Netlink, index: u32) -> Result<Option<LinkMessage>, Error> {
    let mut request = LinkMessage::default();
    request.header.index = index;
    get(nl, request, || format!("looking up device #{index}")).await
}

async fn get(
    nl: &Netlink,
    request: LinkMessage,
    doing: impl Fn() -> String,
) -> Result<Option<LinkMessage>, Error> {
    match nl.get(RouteNetlinkMessage::GetLink(request)).await {
        Ok(Some(RouteNetlinkMessage::NewLink(link))) => Ok(Some(link)),
        Ok(_) => Ok(None),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(Error::netlink(doing(), e)),
    }
}

/// The device's name.
pub fn name(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// The device's MTU.
pub fn mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}
