"""The live-log ExampleGen: point-in-time tf.Examples from simulated live-stream event logs."""
