defmodule ExMCP.Test.TestCA do
  @moduledoc """
  A throwaway certificate authority made with the openssl CLI, and a server
  certificate it signed for `127.0.0.1`, for TLS listeners in tests.
  """

  import ExUnit.Assertions

  @ec ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

  @doc "Writes `ca.pem`, `server.pem` and `server.key` into `dir`; their paths."
  @spec create!(Path.t()) :: %{ca: Path.t(), cert: Path.t(), key: Path.t()}
  def create!(dir) do
    File.mkdir_p!(dir)

    openssl!(
      dir,
      ["req", "-x509"] ++
        @ec ++
        ~w(-keyout ca.key -out ca.pem -days 30 -subj /CN=ExMCP-Test-CA
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign)
    )

    openssl!(dir, ["req"] ++ @ec ++ ~w(-keyout server.key -out server.csr -subj /CN=127.0.0.1))

    File.write!(
      Path.join(dir, "server.ext"),
      "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )

    openssl!(
      dir,
      ~w(x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 30 -set_serial 2 -out server.pem -extfile server.ext)
    )

    %{ca: Path.join(dir, "ca.pem"), cert: Path.join(dir, "server.pem"), key: Path.join(dir, "server.key")}
  end

  defp openssl!(dir, args) do
    case System.cmd("openssl", args, cd: dir, stderr_to_stdout: true) do
      {_, 0} -> :ok
      {output, status} -> flunk("openssl #{Enum.join(args, " ")} exited with #{status}:\n#{output}")
    end
  end
end
