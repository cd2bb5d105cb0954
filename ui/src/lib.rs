pub mod model; pub mod intent;
