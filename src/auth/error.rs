//! Why a token was refused, in the three forms the server needs: an HTTP status, a stable
//! machine code for the JSON body, and a sentence for people.

/// Every variant is a unit so that no part of the token (nor the secret) can travel with the
/// error into a response body or a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum AuthError {
    /// No token in the request, or an empty one.
    Missing,
    /// Longer than `auth.max_token_bytes`; refused before any decoding.
    TooLong,
    /// Not three base64url parts, bad JSON, a claim of the wrong shape, or a request that
    /// carries the token ambiguously.
    Malformed,
    /// `alg` is not in `auth.algorithms` (`none` and public-key algorithms never are).
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    /// Valid for longer than `auth.max_token_lifetime` (`exp - iat`, or `exp - now`).
    LifetimeTooLong,
    Audience,
    Issuer,
    /// A valid token, but for another session.
    WrongSession,
    /// A valid token that pins a role other than the one requested.
    WrongRole,
    /// An API key (`rrk_...`) that is not in `auth.api_keys_file`.
    KeyUnknown,
    /// No token, and a verified client certificate that no `tls.client_grants` entry names.
    CertNotGranted,
    /// No token, and a client certificate whose grants are all for other sessions.
    CertWrongSession,
    /// No token, and a client certificate whose grants for this session pin another role.
    CertWrongRole,
}

impl AuthError {
    /// 401 when the client has not proved who it is, 403 when it has but asks for more than
    /// its token grants (so a client knows that fetching a fresh token will not help).
    pub fn status(self) -> u16 {
        match self {
            AuthError::WrongSession
            | AuthError::WrongRole
            | AuthError::CertWrongSession
            | AuthError::CertWrongRole => 403,
            _ => 401,
        }
    }

    /// Stable across releases: clients branch on these.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::TooLong => "token_too_long",
            AuthError::Malformed => "token_malformed",
            AuthError::Algorithm => "token_algorithm",
            AuthError::Signature => "token_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::LifetimeTooLong => "token_lifetime_too_long",
            AuthError::Audience => "token_audience",
            AuthError::Issuer => "token_issuer",
            AuthError::WrongSession => "token_wrong_session",
            AuthError::WrongRole => "token_wrong_role",
            AuthError::KeyUnknown => "api_key_unknown",
            AuthError::CertNotGranted => "client_cert_not_granted",
            AuthError::CertWrongSession => "client_cert_wrong_session",
            AuthError::CertWrongRole => "client_cert_wrong_role",
        }
    }

    /// Fixed text, never built from the request, so it is safe to send and to log.
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => {
                "a token is required: send Authorization: Bearer <token> or the token query parameter"
            }
            AuthError::TooLong => "the token is longer than this server accepts",
            AuthError::Malformed => "the token is malformed, or the request carries more than one",
            AuthError::Algorithm => "the token's signing algorithm is not accepted",
            AuthError::Signature => "the token's signature does not verify",
            AuthError::Expired => "the token has expired",
            AuthError::NotYetValid => "the token is not valid yet",
            AuthError::LifetimeTooLong => {
                "the token is valid for longer than this server accepts (auth.max_token_lifetime)"
            }
            AuthError::Audience => "the token is meant for another audience",
            AuthError::Issuer => "the token comes from an issuer this server does not trust",
            AuthError::WrongSession => "the token does not grant access to this session",
            AuthError::WrongRole => "the token does not grant this role",
            AuthError::KeyUnknown => "this API key is not known here (or was revoked)",
            AuthError::CertNotGranted => {
                "this client certificate grants no access here: send a token, or ask for a grant"
            }
            AuthError::CertWrongSession => {
                "this client certificate does not grant access to this session"
            }
            AuthError::CertWrongRole => "this client certificate does not grant this role",
        }
    }
}

impl AuthError {
    /// The error a certificate's grant gets where [`super::Claims::grant`] refused it: a
    /// client is told whether its token or its certificate fell short.
    pub fn for_certificate(self) -> AuthError {
        match self {
            AuthError::WrongSession => AuthError::CertWrongSession,
            AuthError::WrongRole => AuthError::CertWrongRole,
            other => other,
        }
    }
}
