rustler::atoms! {
    ok,
    error,
    nil,
    cancelled,
    delivered,
    invalid_option,
    // Option keys.
    timeout,
    connect_timeout,
    max_response_bytes,
    headers,
    cacertfile,
    initial_access_token,
}
