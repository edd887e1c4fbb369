fn main() {
    eprintln!("triad-jepsen: under construction");
    std::process::exit(2);
}
