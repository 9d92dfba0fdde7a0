//! ISO 3166-1 alpha-2 country codes.

use serde::Serialize;
use std::fmt;

/// Every officially assigned ISO 3166-1 alpha-2 code, plus `XK` (Kosovo),
/// which is user-assigned but what CDNs' country headers send for it.
const ASSIGNED: &str = "\
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY \
HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP \
KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY \
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
NA NC NE NF NG NI NL NO NP NR NU NZ OM \
PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW \
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW";

/// An upper-case ISO 3166-1 alpha-2 code that is actually assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Every code [`CountryCode::parse`] accepts, in order (for documents
    /// such as the OpenAPI enum).
    pub fn all() -> impl Iterator<Item = &'static str> {
        ASSIGNED.split(' ')
    }

    /// Strict: what a client sends in a report must already be upper case.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_uppercase) {
            return Err("must be an upper-case ISO 3166-1 alpha-2 code such as \"FR\"".into());
        }
        if !ASSIGNED.split(' ').any(|c| c == s) {
            return Err(format!("{s:?} is not an assigned ISO 3166-1 alpha-2 code"));
        }
        Ok(Self([b[0], b[1]]))
    }

    /// Lenient, for values set by proxies (`CF-IPCountry: fr`); `None` for
    /// their placeholders such as `XX` or `T1`.
    pub fn from_header(s: &str) -> Option<Self> {
        Self::parse(&s.trim().to_ascii_uppercase()).ok()
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII upper-case letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_holds_249_assigned_codes_and_kosovo() {
        let codes: Vec<&str> = ASSIGNED.split(' ').collect();
        assert_eq!(codes.len(), 250);
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, codes, "sorted and without duplicates");
    }

    #[test]
    fn parse_is_strict_about_case_and_assignment() {
        assert_eq!(CountryCode::parse("FR").unwrap().as_str(), "FR");
        for bad in ["fr", "F", "FRA", "ZZ", "XX", "", "É1"] {
            assert!(CountryCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_values_are_normalised_and_placeholders_dropped() {
        assert_eq!(CountryCode::from_header(" gb ").unwrap().as_str(), "GB");
        assert_eq!(CountryCode::from_header("XX"), None);
        assert_eq!(CountryCode::from_header("T1"), None);
    }
}
