"""CPU templates: the static :class:`CpuTemplate` and the custom :class:`CpuConfig`."""

from __future__ import annotations

import warnings
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator

from firec.api.models.base import (
    APIModel,
    EnumText,
    NonNegativeInt32,
    StrictStr,
    explained_pattern,
)

__all__ = [
    "ArmRegisterModifier",
    "CpuConfig",
    "CpuTemplate",
    "CpuidLeafModifier",
    "CpuidRegister",
    "CpuidRegisterModifier",
    "MsrModifier",
    "VcpuFeatures",
]

_NUMBER = explained_pattern(
    r"^(0x[0-9a-fA-F_]+|0b[01_]+|[0-9_]+)$",
    'must be a hex, binary or decimal number as a string ("0x1f", "0b101", "31")',
)
_KVM_CAPABILITY = explained_pattern(
    r"^!?[0-9]+$", 'must be a KVM capability number, "!" first to remove it ("121", "!121")'
)


class CpuTemplate(StrEnum):
    """A static CPU template (``MachineConfiguration.cpu_template``).

    Deprecated by Firecracker in favour of custom templates (:class:`CpuConfig`).
    ``C3`` and ``T2`` exist since 1.0, ``T2S`` and ``NONE`` since 1.1,
    ``T2CL`` and ``T2A`` since 1.3, ``V1N1`` since 1.4.
    """

    C3 = "C3"
    T2 = "T2"
    T2S = "T2S"
    T2CL = "T2CL"
    T2A = "T2A"
    V1N1 = "V1N1"
    NONE = "None"


class CpuidRegister(StrEnum):
    """A CPUID output register (``CpuidRegisterModifier.register``)."""

    EAX = "eax"
    EBX = "ebx"
    ECX = "ecx"
    EDX = "edx"


def _check_bitmap(value: str, bits: int) -> str:
    """Check a ``0b...`` bitmap of ``0``, ``1`` and ``x`` (``_`` allowed) of at most ``bits``."""
    if not value.startswith("0b"):
        raise ValueError('must start with "0b"')
    digits = value[2:].replace("_", "")
    if not digits or set(digits) - set("01x"):
        raise ValueError('must be "0b" followed by the characters 0, 1 or x')
    if len(digits) > bits:
        raise ValueError(f"must have at most {bits} bit characters, not {len(digits)}")
    return value


# "register" is the API's field name; pydantic warns that it hides ABCMeta.register,
# a class-level helper no one calls on a model.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class CpuidRegisterModifier(APIModel):
        """Bits to set or clear in one CPUID register (x86_64).

        Part of :class:`CpuidLeafModifier` (``PUT /cpu-config``).
        """

        register: Annotated[CpuidRegister, EnumText] = Field(
            description="Target CPUID register name."
        )
        bitmap: StrictStr = Field(
            description=(
                '32-bit bitmap string defining which bits to modify: "0b" followed by 32 '
                "characters where '0' = clear bit, '1' = set bit, 'x' = don't modify."
            ),
        )

        @field_validator("bitmap")
        @classmethod
        def _bitmap(cls, value: str) -> str:
            return _check_bitmap(value, 32)


class CpuidLeafModifier(APIModel):
    """Modifiers for one CPUID leaf and subleaf (x86_64).

    Part of :class:`CpuConfig` (``PUT /cpu-config``).
    """

    leaf: StrictStr = Field(
        pattern=_NUMBER,
        description='CPUID leaf index as hex, binary, or decimal string (e.g. "0x0", "0b0", "0").',
    )
    subleaf: StrictStr = Field(
        pattern=_NUMBER,
        description='CPUID subleaf index as hex, binary, or decimal string (e.g. "0x0").',
    )
    flags: NonNegativeInt32 = Field(description="KVM feature flags for this leaf-subleaf.")
    modifiers: list[CpuidRegisterModifier] = Field(
        description="Register modifiers for this CPUID leaf."
    )


class MsrModifier(APIModel):
    """Bits to set or clear in one model specific register (x86_64).

    Part of :class:`CpuConfig` (``PUT /cpu-config``).
    """

    addr: StrictStr = Field(
        pattern=_NUMBER,
        description='32-bit MSR address as hex, binary, or decimal string (e.g. "0x10a").',
    )
    bitmap: StrictStr = Field(
        description=(
            "64-bit bitmap string: \"0b\" followed by 64 characters where '0' = clear bit, "
            "'1' = set bit, 'x' = don't modify. Underscores can be used for readability."
        ),
    )

    @field_validator("bitmap")
    @classmethod
    def _bitmap(cls, value: str) -> str:
        return _check_bitmap(value, 64)


class ArmRegisterModifier(APIModel):
    """Bits to set or clear in one ARM register (aarch64).

    Part of :class:`CpuConfig` (``PUT /cpu-config``).
    """

    addr: StrictStr = Field(
        pattern=_NUMBER,
        description='64-bit register address as hex, binary, or decimal string (e.g. "0x0").',
    )
    bitmap: StrictStr = Field(
        description=(
            "128-bit bitmap string: \"0b\" followed by up to 128 characters where '0' = clear "
            "bit, '1' = set bit, 'x' = don't modify. Underscores can be used for readability."
        ),
    )

    @field_validator("bitmap")
    @classmethod
    def _bitmap(cls, value: str) -> str:
        return _check_bitmap(value, 128)


class VcpuFeatures(APIModel):
    """Bits to set or clear in one ``kvm_vcpu_init.features`` word (aarch64).

    Part of :class:`CpuConfig` (``PUT /cpu-config``, Firecracker 1.11+).
    """

    index: NonNegativeInt32 = Field(description="Index in the kvm_vcpu_init.features array.")
    bitmap: StrictStr = Field(
        description=(
            "32-bit bitmap string: \"0b\" followed by 32 characters where '0' = clear bit, "
            "'1' = set bit, 'x' = don't modify."
        ),
    )

    @field_validator("bitmap")
    @classmethod
    def _bitmap(cls, value: str) -> str:
        return _check_bitmap(value, 32)


class CpuConfig(APIModel):
    """A custom CPU template: CPUID, MSR, register, vCPU feature and KVM capability changes.

    Endpoint: ``PUT /cpu-config`` (before boot, Firecracker 1.4+;
    ``kvm_capabilities`` and ``vcpu_features`` 1.11+).
    """

    kvm_capabilities: list[Annotated[StrictStr, Field(pattern=_KVM_CAPABILITY)]] | None = Field(
        default=None,
        description=(
            "KVM capabilities to add or remove (x86_64 and aarch64): numeric strings, prefixed "
            'with "!" to remove, e.g. "121" or "!121".'
        ),
    )
    cpuid_modifiers: list[CpuidLeafModifier] | None = Field(
        default=None, description="CPUID leaf modifiers (x86_64 only)."
    )
    msr_modifiers: list[MsrModifier] | None = Field(
        default=None, description="Model specific register modifiers (x86_64 only)."
    )
    reg_modifiers: list[ArmRegisterModifier] | None = Field(
        default=None, description="Register modifiers (aarch64 only)."
    )
    vcpu_features: list[VcpuFeatures] | None = Field(
        default=None, description="vCPU features to modify (aarch64 only)."
    )
