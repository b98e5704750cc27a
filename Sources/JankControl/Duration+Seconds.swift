extension Duration {
  /// The duration in seconds as a Double (for JSON, metrics and messages).
  public var seconds: Double {
    let (s, attoseconds) = components
    return Double(s) + Double(attoseconds) / 1e18
  }
}
