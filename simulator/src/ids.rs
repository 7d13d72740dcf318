//! Salesforce record ids.
//!
//! A Salesforce id is 15 case-sensitive characters (a three-character key prefix naming the
//! object, then an instance part and a serial) followed by a three-character suffix that encodes
//! where the upper-case letters are, so that the 18-character form survives case-insensitive
//! tools. This module makes ids for the simulated org, computes and checks that suffix, and
//! widens 15-character ids found in SOQL literals. It knows nothing about which object uses
//! which prefix; the org and schema modules decide that.

/// Key prefix of the organization id.
pub const ORG_PREFIX: &str = "00D";
/// Key prefix of User ids.
pub const USER_PREFIX: &str = "005";
/// Key prefix of Profile ids.
pub const PROFILE_PREFIX: &str = "00e";
/// Key prefix of UserLicense ids.
pub const USER_LICENSE_PREFIX: &str = "100";
/// Key prefix of PermissionSetLicense ids.
pub const PSL_PREFIX: &str = "0PL";
/// Key prefix of PackageLicense ids.
pub const PACKAGE_LICENSE_PREFIX: &str = "050";
/// Key prefix of UserPackageLicense ids.
pub const USER_PACKAGE_LICENSE_PREFIX: &str = "051";
/// Key prefix of PermissionSetLicenseAssign ids.
pub const PSL_ASSIGN_PREFIX: &str = "2LA";
/// Key prefix of LoginHistory ids.
pub const LOGIN_HISTORY_PREFIX: &str = "0Ya";
/// Key prefix of query locators.
pub const QUERY_LOCATOR_PREFIX: &str = "01g";

/// The alphabet of the suffix: one character per 5-bit mask.
const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Digits of the serial part, in ASCII order so that string order equals numeric order.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The instance part every simulated id carries after its key prefix.
const INSTANCE: &str = "5g";

/// Width of the serial part: 15 minus the prefix and the instance part.
const SERIAL_WIDTH: usize = 10;

/// Where serials start, so that ids mix digits and letters like real ones do.
const SERIAL_BASE: u64 = 7 * 62u64.pow(5);

/// Computes the three-character case suffix of a 15-character id.
pub fn case_suffix(id15: &str) -> String {
    // Each block of five characters gives one suffix character: bit i is set when the i-th
    // character of the block is an upper-case ASCII letter.
    id15.as_bytes()
        .chunks(5)
        .map(|block| {
            let mask = block
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_ascii_uppercase())
                .fold(0usize, |acc, (i, _)| acc | (1 << i));
            SUFFIX_ALPHABET[mask] as char
        })
        .collect()
}

/// Makes the 18-character id of the `serial`-th record with the given key prefix.
pub fn make_id(prefix: &str, serial: u64) -> String {
    let id15 = format!("{prefix}{INSTANCE}{}", base62(SERIAL_BASE + serial));
    let suffix = case_suffix(&id15);
    id15 + &suffix
}

/// Widens a 15- or 18-character id to its canonical 18-character form.
///
/// Returns `None` when the text is not shaped like an id or when an 18-character id carries a
/// suffix that does not match its first 15 characters.
pub fn to_18(id: &str) -> Option<String> {
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        15 => Some(format!("{id}{}", case_suffix(id))),
        18 => {
            let (head, suffix) = id.split_at(15);
            let expected = case_suffix(head);
            suffix
                .eq_ignore_ascii_case(&expected)
                .then(|| format!("{head}{expected}"))
        }
        _ => None,
    }
}

/// Tells whether `id` is a canonical 18-character id with the given key prefix.
pub fn is_valid(id: &str, prefix: &str) -> bool {
    id.starts_with(prefix) && to_18(id).as_deref() == Some(id)
}

/// Writes `n` in base 62, left-padded with zeros to the serial width.
fn base62(mut n: u64) -> String {
    let mut digits = [b'0'; SERIAL_WIDTH];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_matches_ids_seen_in_recorded_responses() {
        assert_eq!(
            to_18("0055g00000AbCdE").as_deref(),
            Some("0055g00000AbCdEAAV")
        );
        assert_eq!(
            to_18("00D5g000004XyZw").as_deref(),
            Some("00D5g000004XyZwEAK")
        );
        assert_eq!(
            to_18("00e5g000001AbCd").as_deref(),
            Some("00e5g000001AbCdAAK")
        );
    }

    #[test]
    fn made_ids_are_valid_unique_and_ordered() {
        let ids: Vec<String> = (0..5000).map(|n| make_id(USER_PREFIX, n)).collect();
        assert!(ids
            .iter()
            .all(|id| is_valid(id, USER_PREFIX) && id.len() == 18));
        assert!(ids.windows(2).all(|w| w[0][..15] < w[1][..15]));
    }

    #[test]
    fn malformed_ids_are_refused() {
        assert_eq!(to_18("005abc"), None);
        assert_eq!(to_18("0055g00000AbCdEZZZ"), None);
        assert_eq!(to_18("0055g00000AbCd!"), None);
        assert_eq!(
            to_18("0055g00000AbCdEaav").as_deref(),
            Some("0055g00000AbCdEAAV")
        );
    }
}
