defmodule ExMCP.Test.Certificates do
  @moduledoc """
  Test certificates made by the openssl CLI in a directory of the caller's
  choosing: a CA, and a server certificate it signed for `127.0.0.1` and
  `localhost` (EC P-256 keys).

      dir = ExMCP.Test.Certificates.tmp_dir!("my_test")
      %{ca: ca_pem, server_cert: cert_pem, server_key: key_pem} = ExMCP.Test.Certificates.loopback!(dir)

  `openssl!/2` runs any other openssl command in that directory (for
  certificates a test needs besides these), and `ec_key_args/0` gives the
  key options used here.
  """

  @ec ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

  @doc "The openssl `req` options for a new EC P-256 key without a passphrase."
  @spec ec_key_args() :: [String.t()]
  def ec_key_args, do: @ec

  @doc "A new empty directory under the system's temporary directory."
  @spec tmp_dir!(String.t()) :: Path.t()
  def tmp_dir!(prefix) do
    dir = Path.join(System.tmp_dir!(), "#{prefix}_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    dir
  end

  @doc "Runs `openssl` with `args` in `dir`; raises with its output when it fails."
  @spec openssl!(Path.t(), [String.t()]) :: :ok
  def openssl!(dir, args) do
    case System.cmd("openssl", args, cd: dir, stderr_to_stdout: true) do
      {_output, 0} -> :ok
      {output, status} -> raise "openssl #{Enum.join(args, " ")} exited with #{status}:\n#{output}"
    end
  end

  @doc """
  Makes `ca.pem`/`ca.key`, and `good.pem` with `server.key` (and its CSR,
  `server.csr`, and the extensions file `good.ext`): a server certificate
  for `IP:127.0.0.1` and `DNS:localhost`, valid 30 days, signed by the CA.
  """
  @spec loopback!(Path.t()) :: %{ca: Path.t(), ca_key: Path.t(), server_cert: Path.t(), server_key: Path.t()}
  def loopback!(dir) do
    openssl!(
      dir,
      ["req", "-x509"] ++
        @ec ++
        ~w(-keyout ca.key -out ca.pem -days 3650 -subj /CN=ExMCP-Test-CA
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign)
    )

    openssl!(dir, ["req"] ++ @ec ++ ~w(-keyout server.key -out server.csr -subj /CN=127.0.0.1))
    File.write!(Path.join(dir, "good.ext"), server_extensions("IP:127.0.0.1,DNS:localhost"))
    sign!(dir, "good.pem", "2", "good.ext")

    path = &Path.join(dir, &1)

    %{
      ca: path.("ca.pem"),
      ca_key: path.("ca.key"),
      server_cert: path.("good.pem"),
      server_key: path.("server.key")
    }
  end

  @doc "The extensions of a server certificate for `subject_alt_names` (openssl syntax)."
  @spec server_extensions(String.t()) :: String.t()
  def server_extensions(subject_alt_names),
    do: "subjectAltName=#{subject_alt_names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"

  @doc "Signs `server.csr` with the CA of `loopback!/1` into `out`, with the extensions file `ext`."
  @spec sign!(Path.t(), String.t(), String.t(), String.t()) :: :ok
  def sign!(dir, out, serial, ext) do
    openssl!(
      dir,
      ~w(x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 30 -set_serial) ++
        [serial, "-out", out, "-extfile", ext]
    )
  end
end
