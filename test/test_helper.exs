ExUnit.start()

# No test may write to the real home directory: the Mix tasks' default client
# store is under XDG_CONFIG_HOME, so point it at a directory of our own.
System.put_env(
  "XDG_CONFIG_HOME",
  Path.join(System.tmp_dir!(), "ex_mcp_test_config_#{System.unique_integer([:positive])}")
)
