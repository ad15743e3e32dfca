"""Tidying of the custom resource providers that aws-cdk-lib adds to a stack."""

from __future__ import annotations

from aws_cdk import CfnResource, Stack


def drop_redundant_provider_dependencies(stack: Stack) -> None:
    """Stack-level custom resource providers (the one that restricts the default security
    group, the one that empties buckets on delete) give their Lambda an explicit DependsOn on
    its role, which the role's GetAtt already implies, and cfn-lint warns (W3005). Drop the
    copy; the order CloudFormation uses is unchanged."""
    for child in stack.node.children:
        if not child.node.id.startswith("Custom::"):
            continue
        handler = child.node.try_find_child("Handler")
        role = child.node.try_find_child("Role")
        if isinstance(handler, CfnResource) and isinstance(role, CfnResource):
            handler.remove_resource_dependency(role)
