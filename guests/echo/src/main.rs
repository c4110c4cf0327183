//! `echo`: a WASI preview-1 command. Prints its argv and its environment
//! (sorted), one item a line, then exits with the code given by
//! `--exit N` (default 0). `--stderr TEXT` also writes TEXT to stderr.
//! `--cat PATH` prints a file's contents; `--write PATH` writes "written" to
//! a file; `--symlink TARGET LINK` (LINK relative to the first preopened
//! directory), `--rm PATH`, `--mkdir PATH` and
//! `--rename FROM TO` do what they say (for sandbox tests of preopened
//! directories). A failed step prints `STEP failed: ERROR` to stderr and
//! sets the exit code: 3 for --cat, 4 for any change.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    for (i, a) in args.iter().enumerate() {
        println!("argv[{i}]={a}");
    }
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    for (k, v) in env {
        println!("env {k}={v}");
    }
    let mut code = 0;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--exit" => code = it.next().and_then(|c| c.parse().ok()).unwrap_or(0),
            "--stderr" => eprintln!("{}", it.next().map(String::as_str).unwrap_or("")),
            "--cat" => match std::fs::read_to_string(it.next().map(String::as_str).unwrap_or("")) {
                Ok(s) => print!("{s}"),
                Err(e) => {
                    eprintln!("cat failed: {e}");
                    code = 3;
                }
            },
            "--write" => {
                match std::fs::write(it.next().map(String::as_str).unwrap_or(""), "written") {
                    Ok(()) => println!("write ok"),
                    Err(e) => {
                        eprintln!("write failed: {e}");
                        code = 4;
                    }
                }
            }
            "--symlink" | "--rename" => {
                let from = it.next().map(String::as_str).unwrap_or("");
                let to = it.next().map(String::as_str).unwrap_or("");
                let r = if a == "--symlink" {
                    symlink(from, to)
                } else {
                    std::fs::rename(from, to)
                };
                report(&a[2..], r, &mut code);
            }
            "--rm" => {
                let path = it.next().map(String::as_str).unwrap_or("");
                report("rm", std::fs::remove_file(path), &mut code);
            }
            "--mkdir" => {
                let path = it.next().map(String::as_str).unwrap_or("");
                report("mkdir", std::fs::create_dir(path), &mut code);
            }
            _ => {}
        }
    }
    std::process::exit(code);
}

/// Makes a symlink at `link`, relative to the first preopened directory
/// (file descriptor 3), pointing at `target`.
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    // SAFETY: a WASI call with valid strings; fd 3 is the first preopen.
    unsafe { wasi::path_symlink(target, 3, link) }
        .map_err(|e| std::io::Error::from_raw_os_error(e.raw() as i32))
}

fn report(step: &str, r: std::io::Result<()>, code: &mut i32) {
    match r {
        Ok(()) => println!("{step} ok"),
        Err(e) => {
            eprintln!("{step} failed: {e}");
            *code = 4;
        }
    }
}
