//! Medicaid TCM billing: the rules profiles (TOML in `ops/billing/`, validated at start) and,
//! built on `projections::billing`, the activity log billing staff pull.

pub mod batch;
pub mod export;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use projections::billing::{Profile, ProfileError};

/// The profiles shipped with Linkage, compiled in so `serve` finds them from any directory.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "ops/billing/texas_like.toml",
        include_str!("../../../ops/billing/texas_like.toml"),
    ),
    (
        "ops/billing/california_like.toml",
        include_str!("../../../ops/billing/california_like.toml"),
    ),
];

/// The profile used when none is configured.
pub const DEFAULT_PROFILE: &str = "texas_like";

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("billing rules file {file}: {detail}")]
    Parse { file: String, detail: String },
    #[error(transparent)]
    Invalid(#[from] ProfileError),
    #[error("cannot read the billing rules directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("two billing rules files define profile `{0}`")]
    Duplicate(String),
    #[error("no billing profile `{name}`; known: {known}")]
    Unknown { name: String, known: String },
}

fn parse(file: &str, text: &str) -> Result<Profile, BillingError> {
    let profile: Profile = toml::from_str(text).map_err(|e| BillingError::Parse {
        file: file.to_owned(),
        detail: e.to_string(),
    })?;
    profile.validate()?;
    Ok(profile)
}

/// Every profile: the built-in ones, then each `*.toml` in `dir` (which may replace a built-in
/// one of the same name), all parsed and validated.
pub fn load_profiles(dir: Option<&Path>) -> Result<BTreeMap<String, Profile>, BillingError> {
    let mut out = BTreeMap::new();
    for (file, text) in BUILTIN {
        let p = parse(file, text)?;
        out.insert(p.name.clone(), p);
    }
    if let Some(dir) = dir {
        let read_err = |source| BillingError::Dir {
            dir: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut seen = Vec::new();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(read_err)?;
            let p = parse(&path.display().to_string(), &text)?;
            if seen.contains(&p.name) {
                return Err(BillingError::Duplicate(p.name));
            }
            seen.push(p.name.clone());
            out.insert(p.name.clone(), p);
        }
    }
    Ok(out)
}

/// The configured profile, or a clear error naming the known ones.
pub fn select(name: &str, dir: Option<&Path>) -> Result<Profile, BillingError> {
    let mut all = load_profiles(dir)?;
    let known = all.keys().cloned().collect::<Vec<_>>().join(", ");
    all.remove(name).ok_or_else(|| BillingError::Unknown {
        name: name.to_owned(),
        known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shipped_profiles_load_and_the_default_is_one_of_them() {
        let all = load_profiles(None).expect("the shipped profiles are valid");
        assert!(all.contains_key("texas_like") && all.contains_key("california_like"));
        assert!(all.contains_key(DEFAULT_PROFILE));
    }

    #[test]
    fn an_unknown_profile_names_the_known_ones() {
        let err = select("ohio_like", None).unwrap_err().to_string();
        assert!(
            err.contains("ohio_like") && err.contains("california_like, texas_like"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_file_in_the_rules_directory_is_named_with_its_problem() {
        let dir = std::env::temp_dir().join(format!("linkage-billing-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = BUILTIN[0]
            .1
            .replace("name = \"texas_like\"", "name = \"ohio_like\"")
            .replace(
                "first_unit_minimum_minutes = 8",
                "first_unit_minimum_minutes = 20",
            );
        std::fs::write(dir.join("ohio.toml"), bad).unwrap();
        let err = load_profiles(Some(&dir)).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("ohio_like") && err.contains("1 to 15, got 20"),
            "{err}"
        );
    }

    #[test]
    fn a_rules_directory_adds_profiles() {
        let dir = std::env::temp_dir().join(format!("linkage-billing-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ohio = BUILTIN[0]
            .1
            .replace("name = \"texas_like\"", "name = \"ohio_like\"");
        std::fs::write(dir.join("ohio.toml"), ohio).unwrap();
        let p = select("ohio_like", Some(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(p.expect("loads").procedure_code, "T1017");
    }
}
