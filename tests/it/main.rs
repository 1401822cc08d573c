mod cli;
mod vault;
