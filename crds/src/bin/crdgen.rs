//! Prints the CustomResourceDefinitions generated from the types, or writes them one file per
//! kind (`crdgen --write <dir>`). The committed YAML under `crds/` is checked against this output
//! by a test.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => {
            for (_, yaml) in wgsub_crds::resources::crd_documents()? {
                print!("---\n{yaml}");
            }
        }
        Some("--write") => {
            let dir = PathBuf::from(args.next().ok_or("--write needs a directory")?);
            for (file, yaml) in wgsub_crds::resources::crd_documents()? {
                let path = dir.join(file);
                std::fs::write(&path, yaml)?;
                eprintln!("wrote {}", path.display());
            }
        }
        Some("--help" | "-h") => {
            println!(
                "usage: crdgen [--write <dir>]\n\nPrints the wgsub CRDs as YAML, or writes <plural>.yaml files into <dir>."
            );
        }
        Some(other) => return Err(format!("unknown argument {other:?}; try --help").into()),
    }
    Ok(())
}
