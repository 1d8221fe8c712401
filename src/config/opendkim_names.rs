//! The names OpenDKIM knows, with the value type each one takes, and what
//! dkim-sidecar does with each.
//!
//! The list is OpenDKIM 2.11's `opendkim-config.h` (every build option
//! included), plus the names the 2.11.0~beta2 binary Debian ships accepts
//! that the header lacks (checked with `opendkim -n`). A name in this list
//! that dkim-sidecar does not implement earns a warning; a name that is
//! not in it is an error, as it is for OpenDKIM. This module only answers
//! questions about names.

/// How OpenDKIM parses an option's value (`CONFIG_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValueType {
    Bool,
    Int,
    Str,
    Include,
}

use ValueType::{Bool, Include, Int, Str};

/// Every option name OpenDKIM knows, as it spells it.
pub(crate) const OPENDKIM_OPTIONS: &[(&str, ValueType)] = &[
    ("AddAllSignatureResults", Bool),
    ("ADSPAction", Str),
    ("ADSPNoSuchDomain", Bool),
    ("AllowSHA1Only", Bool),
    ("AlwaysAddARHeader", Bool),
    ("ATPSDomains", Str),
    ("ATPSHashAlgorithm", Str),
    ("AuthservID", Str),
    ("AuthservIDWithJobID", Bool),
    ("AutoRestart", Bool),
    ("AutoRestartCount", Int),
    ("AutoRestartRate", Str),
    ("Background", Bool),
    ("BaseDirectory", Str),
    ("BodyLengthDB", Str),
    ("BogusKey", Str),
    ("BogusPolicy", Str),
    ("Canonicalization", Str),
    ("CaptureUnknownErrors", Bool),
    ("ChangeRootDirectory", Str),
    ("ClockDrift", Int),
    ("DefaultSender", Str),
    ("Diagnostics", Bool),
    ("DiagnosticDirectory", Str),
    ("DisableADSP", Bool),
    ("DisableCryptoInit", Bool),
    ("DKIMReputationFail", Int),
    ("DKIMReputationPass", Int),
    ("DKIMReputationReject", Int),
    ("DKIMReputationRoot", Str),
    ("DNSConnect", Bool),
    ("DNSTimeout", Int),
    ("Domain", Str),
    ("DomainKeysCompat", Bool),
    ("DontSignMailTo", Str),
    ("EnableCoredumps", Bool),
    ("ExemptDomains", Str),
    ("ExternalIgnoreList", Str),
    ("FinalPolicyScript", Str),
    ("FixCRLF", Bool),
    ("FlowData", Str),
    ("FlowDataFactor", Int),
    ("FlowDataTTL", Int),
    ("IdentityHeader", Str),
    ("IdentityHeaderRemove", Bool),
    ("IgnoreMalformedMail", Bool),
    ("Include", Include),
    ("InternalHosts", Str),
    ("KeepAuthResults", Bool),
    ("KeepTemporaryFiles", Bool),
    ("KeyFile", Str),
    ("KeyTable", Str),
    ("LDAPAuthMechanism", Str),
    ("LDAPAuthName", Str),
    ("LDAPAuthRealm", Str),
    ("LDAPAuthUser", Str),
    ("LDAPBindPassword", Str),
    ("LDAPBindUser", Str),
    ("LDAPDisableCache", Bool),
    ("LDAPKeepaliveIdle", Str),
    ("LDAPKeepaliveInterval", Str),
    ("LDAPKeepaliveProbes", Str),
    ("LDAPSoftStart", Bool),
    ("LDAPTimeout", Str),
    ("LDAPUseTLS", Bool),
    ("LocalADSP", Str),
    ("LogResults", Bool),
    ("LogWhy", Bool),
    ("MaximumHeaders", Int),
    ("MaximumSignedBytes", Int),
    ("MaximumSignaturesToVerify", Int),
    ("MacroList", Str),
    ("MilterDebug", Int),
    ("Minimum", Str),
    ("MinimumKeyBits", Int),
    ("MultipleSignatures", Bool),
    ("Mode", Str),
    ("MTA", Str),
    ("MTACommand", Str),
    ("MustBeSigned", Str),
    ("Nameservers", Str),
    ("NoDiscardableMailTo", Str),
    ("NoHeaderB", Bool),
    ("OmitHeaders", Str),
    ("On-BadSignature", Str),
    ("On-Default", Str),
    ("On-DNSError", Str),
    ("On-InternalError", Str),
    ("On-KeyNotFound", Str),
    ("On-NoSignature", Str),
    ("On-PolicyError", Str),
    ("On-ReputationError", Str),
    ("On-Security", Str),
    ("On-SignatureError", Str),
    ("OverSignHeaders", Str),
    ("PeerList", Str),
    ("PidFile", Str),
    ("POPDBFile", Str),
    ("Quarantine", Bool),
    ("QueryCache", Bool),
    ("RateLimits", Str),
    ("RedirectFailuresTo", Str),
    ("RemoveARAll", Bool),
    ("RemoveARFrom", Str),
    ("RemoveOldSignatures", Bool),
    ("ReplaceHeaders", Str),
    ("ReplaceRules", Str),
    ("ReportAddress", Str),
    ("ReportBccAddress", Str),
    ("ReputationCache", Str),
    ("ReputationCacheTTL", Int),
    ("ReputationDuplicates", Str),
    ("ReputationLimits", Str),
    ("ReputationLowTime", Str),
    ("ReputationMinimum", Int),
    ("ReputationLimitModifiers", Str),
    ("ReputationRatios", Str),
    ("ReputationRRDHashDepth", Int),
    ("ReputationRRDRoot", Str),
    ("ReputationTest", Bool),
    ("ReputationVerbose", Bool),
    ("ReputationSpamCheck", Str),
    ("ReputationTimeFactor", Int),
    ("ReputationTimeout", Int),
    ("RequestReports", Bool),
    ("RequiredHeaders", Bool),
    ("RequireSafeKeys", Bool),
    ("ResignAll", Bool),
    ("ResignMailTo", Str),
    ("ResolverConfiguration", Str),
    ("ResolverTracing", Bool),
    ("ScreenPolicyScript", Str),
    ("Selector", Str),
    ("SelectCanonicalizationHeader", Str),
    ("SendADSPReports", Bool),
    ("SenderHeaders", Str),
    ("SenderMacro", Str),
    ("SendReports", Bool),
    ("SetupPolicyScript", Str),
    ("SignatureAlgorithm", Str),
    ("SignatureTTL", Int),
    ("SignHeaders", Str),
    ("SigningTable", Str),
    ("SMTPURI", Str),
    ("Socket", Str),
    ("SoftStart", Bool),
    ("SoftwareHeader", Bool),
    ("Statistics", Str),
    ("StatisticsName", Str),
    ("StatisticsPolicyScript", Str),
    ("StatisticsPrefix", Str),
    ("StrictHeaders", Bool),
    ("StrictTestMode", Bool),
    ("SubDomains", Bool),
    ("Syslog", Bool),
    ("SyslogFacility", Str),
    ("SyslogName", Str),
    ("SyslogSuccess", Bool),
    ("TemporaryDirectory", Str),
    ("TestDNSData", Str),
    ("TestPublicKeys", Str),
    ("TrustAnchorFile", Str),
    ("TrustSignaturesFrom", Str),
    ("UMask", Int),
    ("UnprotectedKey", Str),
    ("UnprotectedPolicy", Str),
    ("UserID", Str),
    ("VBR-Certifiers", Str),
    ("VBR-PurgeFields", Bool),
    ("VBR-TrustedCertifiers", Str),
    ("VBR-TrustedCertifiersOnly", Bool),
    ("VBR-Type", Str),
    ("WeakSyntaxChecks", Bool),
    ("X-Header", Bool),
];

/// Options that hand OpenDKIM's decisions to a Lua script: a configuration
/// with one is refused, since without the script we would decide
/// differently.
pub(crate) const POLICY_SCRIPTS: &[&str] = &[
    "FinalPolicyScript",
    "ScreenPolicyScript",
    "SetupPolicyScript",
    "SignatureScript",
];

/// Options dkim-sidecar acts on.
pub(crate) const IMPLEMENTED: &[&str] = &[
    "AlwaysAddARHeader",
    "ATPSDomains",
    "AuthservID",
    "AuthservIDWithJobID",
    "BaseDirectory",
    "BodyLengthDB",
    "BogusKey",
    "Canonicalization",
    "ClockDrift",
    "DNSTimeout",
    "Domain",
    "DontSignMailTo",
    "ExemptDomains",
    "ExternalIgnoreList",
    "Include",
    "InternalHosts",
    "KeepAuthResults",
    "KeyFile",
    "KeyTable",
    "LDAPAuthMechanism",
    "LDAPBindPassword",
    "LDAPBindUser",
    "LDAPSoftStart",
    "LDAPTimeout",
    "LDAPUseTLS",
    "LogWhy",
    "MacroList",
    "MaximumHeaders",
    "MaximumSignaturesToVerify",
    "MinimumKeyBits",
    "Mode",
    "MTA",
    "MultipleSignatures",
    "Nameservers",
    "NoHeaderB",
    "OmitHeaders",
    "On-BadSignature",
    "On-Default",
    "On-DNSError",
    "On-InternalError",
    "On-KeyNotFound",
    "On-NoSignature",
    "On-Security",
    "On-SignatureError",
    "OverSignHeaders",
    "PeerList",
    "PidFile",
    "RemoveARAll",
    "RemoveARFrom",
    "ReplaceHeaders",
    "ReplaceRules",
    "RequestReports",
    "RequireSafeKeys",
    "Selector",
    "SenderHeaders",
    "SignatureAlgorithm",
    "SignatureTTL",
    "SignHeaders",
    "SigningTable",
    "Socket",
    "SoftStart",
    "SoftwareHeader",
    "StrictHeaders",
    "SubDomains",
    "Syslog",
    "SyslogFacility",
    "SyslogSuccess",
    "TestDNSData",
    "TestPublicKeys",
    "TrustAnchorFile",
    "UMask",
    "UnprotectedKey",
    "UserID",
    "WeakSyntaxChecks",
    "X-Header",
];

/// Options accepted without a word: they describe how OpenDKIM daemonizes
/// (we always run in the foreground under a supervisor), or ask for what we
/// always do (QueryCache: key records are cached).
pub(crate) const ACCEPTED_QUIETLY: &[&str] = &[
    "AutoRestart",
    "AutoRestartCount",
    "AutoRestartRate",
    "Background",
    "QueryCache",
];

/// The name and value type of a known option, looked up without regard to
/// case as OpenDKIM does.
pub(crate) fn lookup(name: &str) -> Option<(&'static str, ValueType)> {
    OPENDKIM_OPTIONS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .copied()
}

/// What dkim-sidecar does with a known option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Support {
    Implemented,
    Quiet,
    Unsupported,
}

pub(crate) fn support(canonical: &str) -> Support {
    if IMPLEMENTED.contains(&canonical) {
        Support::Implemented
    } else if ACCEPTED_QUIETLY.contains(&canonical) {
        Support::Quiet
    } else {
        Support::Unsupported
    }
}

/// The known name an unknown one was probably meant to be.
pub(crate) fn suggestion(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    // Many guides call their host list file TrustedHosts; no option has
    // that name.
    if lower == "trustedhosts" || lower == "trustedhostslist" {
        return Some("InternalHosts");
    }
    let limit = if lower.len() >= 10 { 3 } else { 2 };
    OPENDKIM_OPTIONS
        .iter()
        .map(|(name, _)| (edit_distance(&lower, &name.to_ascii_lowercase()), *name))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implemented_or_quiet_name_is_an_opendkim_option() {
        for name in IMPLEMENTED.iter().chain(ACCEPTED_QUIETLY) {
            assert_eq!(lookup(name).map(|(n, _)| n), Some(*name), "{name}");
        }
    }

    #[test]
    fn names_are_found_without_regard_to_case() {
        assert_eq!(lookup("keytable"), Some(("KeyTable", Str)));
        assert_eq!(lookup("UMASK"), Some(("UMask", Int)));
        assert_eq!(lookup("Userid"), Some(("UserID", Str)));
        assert_eq!(lookup("TrustedHosts"), None);
    }

    #[test]
    fn misspelt_names_get_the_closest_known_name() {
        assert_eq!(suggestion("Sokcet"), Some("Socket"));
        assert_eq!(suggestion("SigningTabel"), Some("SigningTable"));
        assert_eq!(suggestion("OversignHeader"), Some("OverSignHeaders"));
        assert_eq!(suggestion("TrustedHosts"), Some("InternalHosts"));
        assert_eq!(suggestion("CompletelyDifferent"), None);
    }

    #[test]
    fn the_list_has_every_option_of_opendkim_2_11() {
        assert_eq!(OPENDKIM_OPTIONS.len(), 174);
        let mut names: Vec<String> = OPENDKIM_OPTIONS
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), OPENDKIM_OPTIONS.len(), "no duplicates");
    }
}
