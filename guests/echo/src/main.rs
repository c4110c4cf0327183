//! `echo`: a WASI preview-1 command. Prints its argv and its environment
//! (sorted), one item a line, then exits with the code given by
//! `--exit N` (default 0). `--stderr TEXT` also writes TEXT to stderr.
//! `--cat PATH` prints a file's contents; `--write PATH` writes "written" to
//! a file (for sandbox tests of preopened directories).

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
            _ => {}
        }
    }
    std::process::exit(code);
}
