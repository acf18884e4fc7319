package io.foresight.registry;

/** A refused request: its HTTP status and Confluent's error code, with a message for people. */
final class RegistryException extends Exception {
  private static final long serialVersionUID = 1L;

  final int status;
  final int code;

  RegistryException(int status, int code, String message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}
