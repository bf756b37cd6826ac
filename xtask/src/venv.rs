//! Python virtual environments for the xtask commands, made one way: `python3 -m venv`, then
//! `pip install -r` a pinned requirements file. The compat suite keeps its clients in one
//! (`<target>/compat/venv`), the wheel step its maturin (`<target>/wheel/maturin`) and its
//! clients beside the installed wheel. Errors are the reason, as text, that a step prints after
//! `SKIPPED` or a case after its name.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::util;

/// Creates (or reuses) the venv `venv` with `requirements` installed; its python. A venv is
/// reused while the requirements it was made with are unchanged (a marker inside it keeps them),
/// so that a second run installs nothing.
pub(crate) fn prepare(requirements: &Path, venv: &Path) -> Result<PathBuf, String> {
    let wanted = fs::read_to_string(requirements)
        .map_err(|err| format!("cannot read {}: {err}", requirements.display()))?;
    let python = python(venv);
    let marker = venv.join(PINS_MARKER);
    if python.is_file() && fs::read_to_string(&marker).is_ok_and(|pins| pins == wanted) {
        println!("{} is current ({})", venv.display(), pins_summary(&wanted));
        return Ok(python);
    }
    if !python.is_file() {
        create(venv)?;
    }
    install(&python, requirements)?;
    fs::write(&marker, &wanted)
        .map_err(|err| format!("cannot write {}: {err}", marker.display()))?;
    Ok(python)
}

/// `python3 -m venv venv`; the reason it failed.
pub(crate) fn create(venv: &Path) -> Result<(), String> {
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(venv);
    if util::run_echoed(&mut create).map_err(|err| format!("{err:#}"))? {
        Ok(())
    } else {
        Err("`python3 -m venv` failed (on Debian, install python3-venv)".into())
    }
}

/// `python -m pip install -r requirements`, quietly; the reason it failed.
pub(crate) fn install(python: &Path, requirements: &Path) -> Result<(), String> {
    let mut install = Command::new(python);
    install
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "-r",
        ])
        .arg(requirements);
    if util::run_echoed(&mut install).map_err(|err| format!("{err:#}"))? {
        Ok(())
    } else {
        Err(format!(
            "pip install -r {} failed (no network?)",
            requirements.display()
        ))
    }
}

/// The python of the venv `venv`.
pub(crate) fn python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

/// `chart_studio==1.1.0, plotly==6.0.0, ...`: the requirement lines without comments.
pub(crate) fn pins(requirements: &str) -> Vec<&str> {
    requirements
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

fn pins_summary(requirements: &str) -> String {
    pins(requirements).join(", ")
}

/// The marker, inside a venv, of the requirements it was installed with.
const PINS_MARKER: &str = "plotstream-requirements.txt";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_summarised_without_comments() {
        assert_eq!(
            pins_summary("# why\nchart_studio==1.1.0\n\nplotly==6.0.0\n"),
            "chart_studio==1.1.0, plotly==6.0.0"
        );
    }
}
