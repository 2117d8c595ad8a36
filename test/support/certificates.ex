defmodule ExMCP.Test.Certificates do
  @moduledoc """
  Test certificates made by the openssl CLI in a directory of the caller's
  choosing (EC P-256 keys): a CA, server certificates it signed for given
  subject alternative names, an expired one, and self-signed ones. Every test
  that needs a certificate makes it here.

      dir = ExMCP.Test.Certificates.tmp_dir!("my_test")
      %{ca: ca_pem, cert: cert_pem, key: key_pem} = ExMCP.Test.Certificates.loopback!(dir)

      # a CA and a certificate for other names:
      %{ca: ca, cert: cert, key: key} =
        ExMCP.Test.Certificates.ca_and_server!(dir, "DNS:mcp.example.test")

  `openssl!/2` runs any other openssl command in that directory, and
  `ec_key_args/0` gives the key options used here.
  """

  @ec ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

  @type ca_and_server() :: %{ca: Path.t(), ca_key: Path.t(), cert: Path.t(), key: Path.t()}

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
  `ca_and_server!/2` for `IP:127.0.0.1,DNS:localhost`: a CA and the
  `server.pem`/`server.key` it signed for the loopback address.
  """
  @spec loopback!(Path.t()) :: ca_and_server()
  def loopback!(dir), do: ca_and_server!(dir, "IP:127.0.0.1,DNS:localhost")

  @doc """
  Makes `ca.pem`/`ca.key` (`ca!/1`) and `server.pem`/`server.key` (`server!/3`
  named `"server"`): a server certificate for `subject_alt_names` (openssl
  syntax, e.g. `"IP:127.0.0.1,DNS:localhost"`) signed by that CA. Creates `dir`.
  """
  @spec ca_and_server!(Path.t(), String.t()) :: ca_and_server()
  def ca_and_server!(dir, subject_alt_names) do
    File.mkdir_p!(dir)
    ca = ca!(dir)
    server = server!(dir, "server", subject_alt_names)
    %{ca: ca.cert, ca_key: ca.key, cert: server.cert, key: server.key}
  end

  @doc "Makes a CA, `ca.pem` with its key `ca.key`, valid 10 years."
  @spec ca!(Path.t()) :: %{cert: Path.t(), key: Path.t()}
  def ca!(dir) do
    openssl!(
      dir,
      ["req", "-x509"] ++
        @ec ++
        ~w(-keyout ca.key -out ca.pem -days 3650 -subj /CN=ExMCP-Test-CA
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign)
    )

    %{cert: Path.join(dir, "ca.pem"), key: Path.join(dir, "ca.key")}
  end

  @doc """
  Makes `<name>.key`, its CSR `<name>.csr`, the extensions file `<name>.ext`
  and `<name>.pem`: a server certificate for `subject_alt_names`, valid 30
  days, signed by the CA of `ca!/1` (which must exist in `dir`). Its subject
  CN is the first of the names.
  """
  @spec server!(Path.t(), String.t(), String.t(), String.t()) :: %{
          cert: Path.t(),
          key: Path.t(),
          csr: Path.t(),
          ext: Path.t()
        }
  def server!(dir, name, subject_alt_names, serial \\ "2") do
    [_type, common_name] = subject_alt_names |> String.split(",") |> hd() |> String.split(":", parts: 2)

    openssl!(
      dir,
      ["req"] ++ @ec ++ ["-keyout", "#{name}.key", "-out", "#{name}.csr", "-subj", "/CN=#{common_name}"]
    )

    File.write!(Path.join(dir, "#{name}.ext"), server_extensions(subject_alt_names))
    sign!(dir, "#{name}.csr", "#{name}.ext", "#{name}.pem", serial)
    path = &Path.join(dir, "#{name}.#{&1}")
    %{cert: path.("pem"), key: path.("key"), csr: path.("csr"), ext: path.("ext")}
  end

  @doc "The extensions of a server certificate for `subject_alt_names` (openssl syntax)."
  @spec server_extensions(String.t()) :: String.t()
  def server_extensions(subject_alt_names),
    do: "subjectAltName=#{subject_alt_names}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"

  @doc """
  Signs the CSR file `csr` with the CA of `ca!/1` into `out`, valid 30 days,
  with the extensions file `ext` and serial number `serial`.
  """
  @spec sign!(Path.t(), String.t(), String.t(), String.t(), String.t()) :: :ok
  def sign!(dir, csr, ext, out, serial) do
    openssl!(
      dir,
      ~w(x509 -req -CA ca.pem -CAkey ca.key -days 30 -set_serial) ++
        [serial, "-in", csr, "-out", out, "-extfile", ext]
    )
  end

  @doc """
  Signs the CSR file `csr` with the CA of `ca!/1` into `out`, with the
  extensions file `ext`, valid only in January 2020: an expired certificate.
  """
  @spec expired!(Path.t(), String.t(), String.t(), String.t()) :: Path.t()
  def expired!(dir, csr, ext, out) do
    # `openssl x509` cannot back-date; `openssl ca` can set both dates.
    File.write!(Path.join(dir, "index.txt"), "")
    File.write!(Path.join(dir, "serial"), "04\n")

    File.write!(Path.join(dir, "ca.cnf"), """
    [ca]
    default_ca = this
    [this]
    database = index.txt
    new_certs_dir = .
    serial = serial
    default_md = sha256
    policy = any
    [any]
    commonName = supplied
    """)

    openssl!(
      dir,
      ~w(ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -notext
         -startdate 20200101000000Z -enddate 20200201000000Z) ++ ["-in", csr, "-out", out, "-extfile", ext]
    )

    Path.join(dir, out)
  end

  @doc """
  Makes `<name>.pem` with its key `<name>.key`: a self-signed certificate for
  `IP:127.0.0.1` (not a CA), valid 30 days.
  """
  @spec self_signed!(Path.t(), String.t()) :: %{cert: Path.t(), key: Path.t()}
  def self_signed!(dir, name) do
    openssl!(
      dir,
      ["req", "-x509"] ++
        @ec ++
        ["-keyout", "#{name}.key", "-out", "#{name}.pem"] ++
        ~w(-days 30 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE)
    )

    %{cert: Path.join(dir, "#{name}.pem"), key: Path.join(dir, "#{name}.key")}
  end
end
