//! The nom vocabulary the decoders share: big-endian numbers over `&[u8]` with the unit
//! error type, so a failed read costs nothing and each caller names its own error.

use nom::IResult;

pub(crate) type Res<'a, T> = IResult<&'a [u8], T, ()>;

pub(crate) fn u8(i: &[u8]) -> Res<'_, u8> {
    nom::number::complete::be_u8(i)
}

pub(crate) fn u16(i: &[u8]) -> Res<'_, u16> {
    nom::number::complete::be_u16(i)
}

pub(crate) fn u32(i: &[u8]) -> Res<'_, u32> {
    nom::number::complete::be_u32(i)
}

pub(crate) fn take(i: &[u8], n: usize) -> Res<'_, &[u8]> {
    nom::bytes::complete::take(n)(i)
}

pub(crate) fn ipv4(i: &[u8]) -> Res<'_, std::net::Ipv4Addr> {
    let (i, v) = u32(i)?;
    Ok((i, std::net::Ipv4Addr::from(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_fails_without_panicking() {
        assert!(u16(&[1]).is_err());
        assert!(u32(&[1, 2, 3]).is_err());
        assert!(take(&[1, 2], 3).is_err());
        assert_eq!(u16(&[1, 2, 3]), Ok((&[3u8][..], 0x0102)));
    }
}
