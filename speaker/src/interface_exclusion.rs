//! Interfaces never to announce on, from MetalLB's `metallb-excludel2` ConfigMap.
//!
//! MetalLB's speaker reads the ConfigMap's `excludel2.yaml` key, mounted as a file, once at
//! start: `announcedInterfacesToExclude` lists regular expressions, and an interface whose
//! name any of them matches (anywhere in the name, as Go's `MatchString`) carries no
//! announcement. ferrolb reads the same file the same way, so the ConfigMap of an existing
//! MetalLB installation keeps working; an interface it excludes is never opened.

use regex::Regex;
use serde::Deserialize;

/// The file the speaker's DaemonSet mounts the ConfigMap's key at (MetalLB's path).
pub const DEFAULT_PATH: &str = "/etc/metallb/excludel2.yaml";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExcludeL2 {
    #[serde(default)]
    announced_interfaces_to_exclude: Vec<String>,
}

/// The exclusions in force: none when the file is absent or lists nothing.
#[derive(Debug, Default, Clone)]
pub struct InterfaceExclusion {
    patterns: Vec<Regex>,
}

impl InterfaceExclusion {
    /// Reads the exclusions from the ConfigMap key's text.
    pub fn parse(yaml: &str) -> Result<Self, String> {
        if yaml.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: ExcludeL2 =
            serde_yaml::from_str(yaml).map_err(|e| format!("excludel2.yaml is not valid: {e}"))?;
        let patterns = config
            .announced_interfaces_to_exclude
            .iter()
            .map(|pattern| {
                Regex::new(pattern).map_err(|e| {
                    format!(
                        "announcedInterfacesToExclude: {pattern:?} is not a regular expression: {e}"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InterfaceExclusion { patterns })
    }

    /// Reads the exclusions from the mounted file; a missing file excludes nothing (the
    /// ConfigMap is optional).
    pub fn read(path: &std::path::Path) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Whether no announcement may go out on the interface named so.
    pub fn excludes(&self, interface: &str) -> bool {
        self.patterns.iter().any(|p| p.is_match(interface))
    }

    /// The expressions in force, as written.
    pub fn patterns(&self) -> Vec<&str> {
        self.patterns.iter().map(|p| p.as_str()).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The list MetalLB's own manifests ship in the ConfigMap.
    const METALLB_DEFAULT: &str = r#"
announcedInterfacesToExclude: ["^docker.*", "^cbr.*", "^dummy.*", "^virbr.*", "^lxcbr.*", "^veth.*", "^lo$", "^cali.*", "^tunl.*", "^flannel.*", "^kube-ipvs.*", "^cni.*", "^nodelocaldns.*"]
"#;

    #[test]
    fn metallbs_default_list_excludes_container_interfaces_and_keeps_the_nics() {
        let exclusion = InterfaceExclusion::parse(METALLB_DEFAULT).unwrap();
        for name in [
            "docker0",
            "cali1234",
            "veth9a8b",
            "lo",
            "flannel.1",
            "kube-ipvs0",
        ] {
            assert!(exclusion.excludes(name), "{name}");
        }
        for name in ["eth0", "ens3", "bond0", "lo0", "br-lan", "eno1.100"] {
            assert!(!exclusion.excludes(name), "{name}");
        }
    }

    #[test]
    fn an_expression_matches_anywhere_in_the_name_as_in_metallb() {
        let exclusion =
            InterfaceExclusion::parse("announcedInterfacesToExclude: [\"vlan\"]").unwrap();
        assert!(exclusion.excludes("eth0.vlan100"));
        assert!(!exclusion.excludes("eth0"));
    }

    #[test]
    fn nothing_listed_or_no_file_excludes_nothing() {
        assert!(!InterfaceExclusion::parse("").unwrap().excludes("eth0"));
        assert!(!InterfaceExclusion::parse("{}").unwrap().excludes("eth0"));
        let dir = tempfile::tempdir().unwrap();
        let missing = InterfaceExclusion::read(&dir.path().join("excludel2.yaml")).unwrap();
        assert!(missing.patterns().is_empty());
    }

    #[test]
    fn a_bad_expression_or_file_is_a_clear_error() {
        let error =
            InterfaceExclusion::parse("announcedInterfacesToExclude: [\"^eth(\"]").unwrap_err();
        assert!(
            error.contains("\"^eth(\" is not a regular expression"),
            "{error}"
        );
        let error = InterfaceExclusion::parse("announcedInterfacesToExclude: 7").unwrap_err();
        assert!(error.contains("excludel2.yaml is not valid"), "{error}");
    }
}
