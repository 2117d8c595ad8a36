defmodule ExMCP.Authorization.ClientStore.Lease do
  @moduledoc false
  # The per-key lock of the built-in client stores, one protocol for the
  # three of them; each adapter only says how to write and erase a lease
  # atomically in its own table (ETS, or Mnesia across nodes).
  #
  # The work under the lock runs in a worker process spawned for it, and the
  # lease names that worker. A process that finds the lease held monitors
  # the holder: the holder's exit, normal or not, on any node, or the loss of
  # its node, wakes the waiters, which then try again. There is no polling
  # and no sleep, and a dead holder's lease is taken over (compare-and-swap
  # on the dead pid), so a crash never leaves a key locked.
  #
  # The worker is not linked to the caller: when the caller stops waiting (its
  # deadline passed, or it died), a registration in flight still completes
  # and is stored, and its result is dropped (the reply goes to an alias that
  # the caller has deactivated).

  @doc """
  Writes `holder` as the lease of `key` if it is free or held by
  `replacing` (a holder known to be dead); else names the live holder.
  """
  @callback try_acquire(name :: term(), key :: term(), holder :: pid(), replacing :: pid() | nil) ::
              :acquired | {:held, pid()} | {:error, term()}

  @doc "Erases the lease of `key` if `holder` holds it."
  @callback release(name :: term(), key :: term(), holder :: pid()) :: :ok

  @doc "The `ready` of a plain with_lock/4: always wait for the lock."
  @spec wait() :: :wait
  def wait, do: :wait

  @spec run(module(), term(), term(), non_neg_integer(), (() -> result), (() -> {:done, result} | :wait)) ::
          result | {:error, {:request_failed, :timeout} | {:client_store, String.t()}}
        when result: term()
  def run(adapter, name, key, timeout, fun, ready) do
    reply_to = :erlang.alias([:reply])
    deadline = System.monotonic_time(:millisecond) + timeout

    {pid, monitor} = spawn_monitor(fn -> work({adapter, name, key, deadline, ready}, fun, reply_to) end)

    receive do
      {^reply_to, result} ->
        Process.demonitor(monitor, [:flush])
        result

      {:DOWN, ^monitor, :process, ^pid, reason} ->
        :erlang.unalias(reply_to)
        {:error, {:client_store, "the client store's worker exited: #{exit_reason(reason)}"}}
    after
      timeout ->
        :erlang.unalias(reply_to)
        Process.demonitor(monitor, [:flush])

        receive do
          {^reply_to, result} -> result
        after
          0 -> {:error, {:request_failed, :timeout}}
        end
    end
  end

  defp work({adapter, name, key, _deadline, _ready} = lock, fun, reply_to) do
    result =
      case acquire(lock, nil) do
        {:done, result} ->
          result

        :acquired ->
          try do
            fun.()
          rescue
            exception ->
              {:error,
               {:client_store, "the work under the store's lock raised #{inspect(exception.__struct__)}"}}
          catch
            kind, _ -> {:error, {:client_store, "the work under the store's lock failed (#{kind})"}}
          after
            adapter.release(name, key, self())
          end

        :timeout ->
          {:error, {:request_failed, :timeout}}

        {:error, _} = error ->
          error
      end

    send(reply_to, {reply_to, result})
  end

  defp acquire({adapter, name, key, deadline, ready} = lock, replacing) do
    case adapter.try_acquire(name, key, self(), replacing) do
      :acquired ->
        :acquired

      {:held, holder} ->
        monitor = Process.monitor(holder)

        receive do
          {:DOWN, ^monitor, :process, ^holder, _} ->
            case ready.() do
              {:done, _} = done -> done
              :wait -> acquire(lock, holder)
            end
        after
          max(deadline - System.monotonic_time(:millisecond), 0) ->
            Process.demonitor(monitor, [:flush])
            :timeout
        end

      {:error, _} = error ->
        error
    end
  end

  # Exit reasons of the worker never hold secrets (it catches what `fun`
  # raises), but stay short.
  defp exit_reason({kind, _}) when is_atom(kind), do: inspect(kind)
  defp exit_reason(reason) when is_atom(reason), do: inspect(reason)
  defp exit_reason(_), do: "abnormal exit"
end
