//! Two fields of a certificate, read from its DER with just enough of a parser to reach them
//! (Certificate → TBSCertificate → Validity, Subject): its notAfter, for the expiry gauges in
//! /stats and /metrics, and its subject's common name, for a verified client certificate
//! (whose subject alternative names webpki reads: `client_names`).

/// One DER element: its tag, its contents and what follows it. Lengths up to four bytes.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The element at the start of `input` when it has tag `tag`, and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = element(input)?;
    (t == tag).then_some((body, rest))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The TBSCertificate's fields from Validity on.
fn from_validity(cert: &[u8]) -> Option<&[u8]> {
    let (cert, _) = expect(cert, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        tbs = element(tbs)?.2;
    }
    let (_, tbs) = expect(tbs, INTEGER)?; // serialNumber
    let (_, tbs) = expect(tbs, SEQUENCE)?; // signature
    let (_, tbs) = expect(tbs, SEQUENCE)?; // issuer
    Some(tbs)
}

/// The notAfter of a DER certificate, in seconds since the Unix epoch.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (validity, _) = expect(from_validity(cert)?, SEQUENCE)?;
    let (_, _, after) = element(validity)?; // notBefore
    let (tag, time, _) = element(after)?;
    parse_time(tag, time)
}

/// The id-at-commonName attribute type (2.5.4.3), as its DER contents.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The first common name (CN) of a DER certificate's subject, if it has one in a string type.
pub fn subject_cn(cert: &[u8]) -> Option<String> {
    let (_, subject) = expect(from_validity(cert)?, SEQUENCE)?; // validity
    let (mut rdns, _) = expect(subject, SEQUENCE)?;
    while !rdns.is_empty() {
        let (set, rest) = expect(rdns, 0x31)?;
        rdns = rest;
        let (attr, _) = expect(set, SEQUENCE)?;
        let (oid, value) = expect(attr, 0x06)?;
        if oid == COMMON_NAME {
            let (_, text, _) = element(value)?;
            return String::from_utf8(text.to_vec()).ok();
        }
    }
    None
}

/// The names a verified client certificate goes by, for admission by certificate
/// (`tls.client_grants`): its subject's common name and its subject alternative names of
/// the DNS and URI kinds (webpki's reading of the extension).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientNames {
    pub cn: Option<String>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
}

impl ClientNames {
    /// Whether `subject` is one of these names: the common name and URIs exactly, DNS names
    /// ASCII-case-insensitively (as DNS compares them).
    pub fn matches(&self, subject: &str) -> bool {
        self.cn.as_deref() == Some(subject)
            || self.uris.iter().any(|u| u == subject)
            || self.dns.iter().any(|d| d.eq_ignore_ascii_case(subject))
    }

    /// The name to log: the common name, else the first SAN.
    pub fn display(&self) -> &str {
        self.cn
            .as_deref()
            .or(self.dns.first().map(String::as_str))
            .or(self.uris.first().map(String::as_str))
            .unwrap_or("")
    }
}

/// The names of a DER certificate (one the handshake has already verified).
pub fn client_names(cert: &[u8]) -> ClientNames {
    let der = rustls::pki_types::CertificateDer::from(cert);
    let (dns, uris) = match webpki::EndEntityCert::try_from(&der) {
        Ok(ee) => (
            ee.valid_dns_names().map(str::to_string).collect(),
            ee.valid_uri_names().map(str::to_string).collect(),
        ),
        Err(_) => (Vec::new(), Vec::new()),
    };
    ClientNames {
        cn: subject_cn(cert),
        dns,
        uris,
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950 to 2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn parse_time(tag: u8, s: &[u8]) -> Option<i64> {
    let digits = |b: &[u8]| -> Option<i64> {
        b.iter().try_fold(0i64, |a, &c| {
            c.is_ascii_digit().then(|| a * 10 + i64::from(c - b'0'))
        })
    };
    let (year, rest) = match tag {
        UTC_TIME if s.len() == 13 => {
            let yy = digits(&s[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        GENERALIZED_TIME if s.len() == 15 => (digits(&s[..4])?, &s[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (h, m, sec) = (field(4)?, field(6)?, field(8)?);
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calendar_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20380119031408Z"),
            Some(2_147_483_648)
        );
        assert_eq!(parse_time(UTC_TIME, b"491231235959+"), None);
    }

    #[test]
    fn reads_the_not_after_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 14);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let want = days_from_civil(2031, 7, 14) * 86_400;
        assert_eq!(not_after(cert.der()), Some(want));
        assert_eq!(
            not_after(&cert.der()[..40]),
            None,
            "a truncated certificate"
        );
    }

    #[test]
    fn client_names_are_the_cn_and_the_dns_and_uri_sans() {
        let mut params =
            rcgen::CertificateParams::new(vec!["Device-7.Example".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://fleet/device-7".try_into().unwrap(),
        ));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-7");
        let key = rcgen::KeyPair::generate().unwrap();
        let names = client_names(params.self_signed(&key).unwrap().der());
        assert_eq!(names.cn.as_deref(), Some("device-7"));
        assert!(names.matches("device-7"));
        assert!(
            !names.matches("DEVICE-7"),
            "a common name is matched exactly"
        );
        assert!(names.matches("device-7.example"), "DNS names ignore case");
        assert!(names.matches("spiffe://fleet/device-7"));
        assert!(!names.matches("device"));
        assert!(!names.matches(""));
        assert_eq!(names.display(), "device-7");
        assert_eq!(client_names(b"not a certificate"), ClientNames::default());
    }

    #[test]
    fn reads_the_subject_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "ringrelay tests");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device-42");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_cn(cert.der()).as_deref(), Some("device-42"));
        let mut none = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        none.distinguished_name = rcgen::DistinguishedName::new();
        let cert = none.self_signed(&key).unwrap();
        assert_eq!(subject_cn(cert.der()), None);
    }
}
